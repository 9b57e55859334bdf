//! JSON output that never prints a number in exponent form, and keeps the value of numbers a
//! double cannot hold.
//!
//! Numbers of a JSON document (`serde_json::Number`, built with serde_json's
//! `arbitrary_precision`) keep their text, so `123456789012345678901234567890123456789` or
//! `0.1000000000000000055511151231257827` leave a flow as they came in (serde_json only
//! normalises an exponent's marker: `1E400` → `1e+400`). A number a double holds exactly prints
//! as that double with Rust's `Display`, which never uses an exponent and drops a zero fraction:
//! `1e21` → `1000000000000000000000`, `1e-7` → `0.0000001`, `100.0` → `100`, `31.5` → `31.5` —
//! consumers that parse numbers strictly, and diffs against upstream Fiso (Go prints `100`),
//! want plain decimals.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};
use serde_json::Number;

/// The double nearest to `n`; beyond the double range, an infinity (CEL computes with it and
/// fails to print the result: `inf has no JSON form`).
pub fn number_as_f64(n: &Number) -> f64 {
    n.as_f64()
        .unwrap_or_else(|| n.as_str().parse().unwrap_or(f64::NAN))
}

/// `text` (a JSON number with a fraction or an exponent) in plain decimals, when a double holds
/// it exactly.
pub(crate) fn plain_decimal(text: &str) -> Option<String> {
    let value: f64 = text.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    if !text.contains(['e', 'E']) {
        // Both are plain decimals of one magnitude: comparing their digits needs no
        // exponent form (every number a CEL `double` writes takes this way).
        let plain = value.to_string();
        return significant_digits(&plain)
            .eq(significant_digits(text))
            .then_some(plain);
    }
    (scientific(text)? == format!("{value:e}")).then(|| value.to_string())
}

/// The digits of a plain decimal from its first to its last non-zero one, without the point.
fn significant_digits(plain: &str) -> impl Iterator<Item = u8> + '_ {
    let bytes = plain.as_bytes();
    let nonzero = |b: &u8| matches!(b, b'1'..=b'9');
    let digits = match (
        bytes.iter().position(nonzero),
        bytes.iter().rposition(nonzero),
    ) {
        (Some(first), Some(last)) => &bytes[first..=last],
        _ => &[],
    };
    digits.iter().copied().filter(u8::is_ascii_digit)
}

/// A JSON number's text in the shortest scientific form Rust's `{:e}` prints for a double:
/// `12.50e3` → `1.25e4`, `0.001` → `1e-3`, `-0` → `-0e0`.
fn scientific(text: &str) -> Option<String> {
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (
            &unsigned[..at],
            unsigned[at + 1..]
                .trim_start_matches('+')
                .parse::<i64>()
                .ok()?,
        ),
        None => (unsigned, 0),
    };
    let (int, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{fraction}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let digits = digits.trim_matches('0');
    if digits.is_empty() {
        return Some(format!("{sign}0e0"));
    }
    let exponent = exponent + i64::try_from(int.len()).ok()? - 1 - i64::try_from(leading).ok()?;
    let (first, rest) = digits.split_at(1);
    let dot = if rest.is_empty() { "" } else { "." };
    Some(format!("{sign}{first}{dot}{rest}e{exponent}"))
}

/// Compact JSON with plain-decimal numbers.
pub fn to_vec_plain<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    // A CloudEvent's attributes alone are ~200 bytes: starting at 512 saves the event on the
    // hot path two reallocations, each a copy of what was written so far.
    let mut out = Vec::with_capacity(512);
    to_writer_plain(&mut out, value)?;
    Ok(out)
}

/// Compact JSON with plain-decimal numbers.
pub fn to_string_plain<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    to_vec_plain(value).map(into_string)
}

/// Compact JSON with plain-decimal numbers, written to `writer`.
pub fn to_writer_plain<W: io::Write, T: Serialize + ?Sized>(
    writer: W,
    value: &T,
) -> serde_json::Result<()> {
    let mut serializer = serde_json::Serializer::with_formatter(writer, Plain(CompactFormatter));
    value.serialize(&mut serializer)
}

/// Indented JSON (two spaces) with plain-decimal numbers.
pub fn to_string_pretty_plain<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(256);
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut out, Plain(PrettyFormatter::new()));
    value.serialize(&mut serializer)?;
    Ok(into_string(out))
}

fn into_string(bytes: Vec<u8>) -> String {
    // serde_json only writes valid UTF-8.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Whether a document's number may print as other text than its own: with an exponent, or a
/// fraction's trailing zero. Any other plain decimal prints as its own digits, whether a double
/// holds them ([`plain_decimal`] gives them back) or not (the text is kept), so it is written
/// without being parsed.
fn may_print_otherwise(text: &str) -> bool {
    text.contains(['e', 'E']) || (text.contains('.') && text.ends_with('0'))
}

/// Another formatter with `Display` for doubles. serde_json writes `null` for NaN and the
/// infinities without asking the formatter, so only finite values reach `write_f64`.
struct Plain<F>(F);

impl<F: Formatter> Formatter for Plain<F> {
    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        write!(writer, "{value}")
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        write!(writer, "{value}")
    }

    /// A document's number (see the module documentation).
    fn write_number_str<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        value: &str,
    ) -> io::Result<()> {
        match may_print_otherwise(value)
            .then(|| plain_decimal(value))
            .flatten()
        {
            Some(plain) => writer.write_all(plain.as_bytes()),
            None => writer.write_all(value.as_bytes()),
        }
    }

    // Layout is the wrapped formatter's.
    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_array(writer)
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_array(writer)
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(writer, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_array_value(writer)
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_object(writer)
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object(writer)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(writer, first)
    }

    fn end_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object_key(writer)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_object_value(writer)
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object_value(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn doubles_print_without_exponent() {
        let cases = [
            (1e21, "1000000000000000000000"),
            (1e-7, "0.0000001"),
            (31.5, "31.5"),
            (100.0, "100"),
            (-0.5, "-0.5"),
            (28.35, "28.35"),
        ];
        for (value, expected) in cases {
            assert_eq!(to_string_plain(&value).expect("prints"), expected);
            assert_eq!(to_string_plain(&json!(value)).expect("prints"), expected);
        }
        assert_eq!(
            serde_json::to_string(&json!(1e21)).expect("prints"),
            "1e+21"
        );
    }

    #[test]
    fn numbers_no_double_holds_keep_their_text() {
        for (text, printed) in [
            (
                "123456789012345678901234567890123456789",
                "123456789012345678901234567890123456789",
            ),
            (
                "-123456789012345678901234567890123456789",
                "-123456789012345678901234567890123456789",
            ),
            (
                "0.1000000000000000055511151231257827",
                "0.1000000000000000055511151231257827",
            ),
            ("18446744073709551616", "18446744073709551616"),
            ("1e400", "1e+400"),
            ("-1E-400", "-1e-400"),
            ("1234567890123456789012e3", "1234567890123456789012e+3"),
            ("-0", "-0"),
            // A double holds these: plain decimals, as before.
            ("1e21", "1000000000000000000000"),
            ("1.5E-7", "0.00000015"),
            ("-2.50e+2", "-250"),
            ("0e10", "0"),
            ("100.0", "100"),
            ("1.50", "1.5"),
            ("0.1", "0.1"),
            ("-0.0", "-0"),
            ("0.00", "0"),
            ("119.39999999999999", "119.39999999999999"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("0.300000000000000040", "0.30000000000000004"),
            ("0.3000000000000000444", "0.3000000000000000444"),
            ("1000.0001000", "1000.0001"),
        ] {
            let doc: serde_json::Value =
                serde_json::from_str(&format!(r#"{{"n":{text}}}"#)).expect("parses");
            assert_eq!(
                to_string_plain(&doc).expect("prints"),
                format!(r#"{{"n":{printed}}}"#),
                "{text}"
            );
        }
    }

    #[test]
    fn a_plain_decimal_without_a_trailing_zero_prints_as_its_digits() {
        for text in [
            "0.5",
            "-0.5",
            "119.4",
            "0.0000001",
            "0.30000000000000004",
            "0.1000000000000000055511151231257827",
            "123456789012345678901234567890.125",
        ] {
            assert!(!may_print_otherwise(text), "{text}");
            assert!(
                plain_decimal(text).is_none_or(|plain| plain == text),
                "{text}"
            );
        }
        for text in ["1.50", "100.0", "1e21", "1.5E-7", "-0.0"] {
            assert!(may_print_otherwise(text), "{text}");
        }
    }

    #[test]
    fn scientific_matches_rust_exponent_form() {
        for (text, value) in [
            ("12.50e3", 12.5e3),
            ("0.001", 0.001),
            ("1e21", 1e21),
            ("-1.5E-7", -1.5e-7),
            ("100", 100.0),
        ] {
            assert_eq!(scientific(text), Some(format!("{value:e}")), "{text}");
        }
        assert_eq!(scientific("-0"), Some("-0e0".into()));
    }

    #[test]
    fn numbers_as_doubles() {
        let n = |text: &str| text.parse::<Number>().expect("number");
        assert_eq!(number_as_f64(&n("0.5")), 0.5);
        assert_eq!(number_as_f64(&n("1e400")), f64::INFINITY);
        assert_eq!(number_as_f64(&n("-1e400")), f64::NEG_INFINITY);
        assert_eq!(
            number_as_f64(&n("123456789012345678901234567890123456789")),
            1.2345678901234568e38
        );
    }

    #[test]
    fn integers_and_non_finite_values() {
        assert_eq!(
            to_string_plain(&json!(u64::MAX)).expect("prints"),
            "18446744073709551615"
        );
        assert_eq!(to_string_plain(&json!(-3)).expect("prints"), "-3");
        assert_eq!(to_string_plain(&f64::NAN).expect("prints"), "null");
        assert_eq!(to_string_plain(&1.5f32).expect("prints"), "1.5");
    }

    #[test]
    fn compact_and_pretty_layouts() {
        let doc = json!({"total": 31.5, "n": [1e21, 100], "o": {}});
        assert_eq!(
            String::from_utf8(to_vec_plain(&doc).expect("prints")).expect("utf-8"),
            r#"{"total":31.5,"n":[1000000000000000000000,100],"o":{}}"#
        );
        assert_eq!(
            to_string_pretty_plain(&doc).expect("prints"),
            "{\n  \"total\": 31.5,\n  \"n\": [\n    1000000000000000000000,\n    100\n  ],\n  \"o\": {}\n}"
        );
    }
}
