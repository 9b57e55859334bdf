//! JSON output that never prints a number in exponent form.
//!
//! `serde_json` prints `1e21` and `1e-7` for those doubles, and `100.0` for a whole double;
//! consumers that parse numbers strictly, and diffs against upstream Fiso (Go prints `100`),
//! want plain decimals. These serializers print doubles with Rust's `Display`, which never
//! uses an exponent and drops a zero fraction: `1e21` → `1000000000000000000000`,
//! `1e-7` → `0.0000001`, `100.0` → `100`, `31.5` → `31.5`.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};

/// Compact JSON with plain-decimal numbers.
pub fn to_vec_plain<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
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
            assert_eq!(to_string_plain(&json!(value)).expect("prints"), expected);
        }
        assert_eq!(
            serde_json::to_string(&json!(1e21)).expect("prints"),
            "1e+21"
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
        let doc = json!({"total": 31.5, "n": [1e21, 100.0], "o": {}});
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
