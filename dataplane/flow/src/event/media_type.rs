//! Media types (`datacontenttype`, `Content-Type`): the RFC 2045 / RFC 9110 §8.3.1 grammar that
//! CloudEvents requires of `datacontenttype` (RFC 2046), and the questions the bindings ask of
//! one: is it the structured CloudEvents JSON format, is the data JSON, is it text.
//!
//! Written here rather than taken from the `mime` crate: that parser accepts what the grammar
//! refuses (`text/plain;` with an empty parameter, for one), and a validator must refuse it.

use std::borrow::Cow;
use std::fmt;

/// The structured-mode media type of the CloudEvents JSON format.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// The batched-mode media type of the CloudEvents JSON format (not accepted by Fiso).
pub const BATCH: &str = "application/cloudevents-batch+json";

/// A parsed media type: `type/subtype` (lower-cased) and whether it has a `charset` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    essence: Cow<'static, str>,
    charset: bool,
}

/// Media types most events carry, exactly as written here: recognised without being parsed.
const COMMON: [&str; 2] = ["application/json", STRUCTURED];

/// Why a text is not a media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTypeError(String);

impl fmt::Display for MediaTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MediaTypeError {}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token(text: &str) -> Option<(&str, &str)> {
    let end = text
        .bytes()
        .position(|b| !is_tchar(b))
        .unwrap_or(text.len());
    (end > 0).then(|| text.split_at(end))
}

/// A `quoted-string` at the start of `text`: the rest after its closing quote.
fn quoted_string(text: &str) -> Option<&str> {
    let mut bytes = text.bytes().enumerate().skip(1);
    while let Some((i, b)) = bytes.next() {
        match b {
            b'"' => return Some(&text[i + 1..]),
            b'\\' => {
                let (_, escaped) = bytes.next()?;
                if !(escaped == b'\t' || (0x20..0x7f).contains(&escaped) || escaped >= 0x80) {
                    return None;
                }
            }
            b'\t' | 0x20..=0x7e | 0x80.. => {}
            _ => return None,
        }
    }
    None
}

fn skip_ows(text: &str) -> &str {
    text.trim_start_matches([' ', '\t'])
}

impl MediaType {
    /// Parses `type "/" subtype *( OWS ";" OWS parameter )`, parameters being
    /// `token "=" ( token / quoted-string )`.
    pub fn parse(text: &str) -> Result<MediaType, MediaTypeError> {
        if let Some(common) = COMMON.iter().find(|c| **c == text) {
            return Ok(MediaType {
                essence: Cow::Borrowed(common),
                charset: false,
            });
        }
        let error = |why: &str| MediaTypeError(format!("{text:?} is not a media type: {why}"));
        if text.is_empty() {
            return Err(error("it is empty"));
        }
        let (type_, rest) = token(text).ok_or_else(|| error("no type before `/`"))?;
        let rest = rest
            .strip_prefix('/')
            .ok_or_else(|| error("expected `type/subtype`"))?;
        let (subtype, mut rest) = token(rest).ok_or_else(|| error("no subtype after `/`"))?;
        let mut charset = false;
        loop {
            let after = skip_ows(rest);
            if after.is_empty() {
                if after.len() != rest.len() {
                    return Err(error("trailing whitespace"));
                }
                break;
            }
            let after = after
                .strip_prefix(';')
                .ok_or_else(|| error("expected `;` before a parameter"))?;
            let (name, value) = token(skip_ows(after))
                .ok_or_else(|| error("a `;` must be followed by a `name=value` parameter"))?;
            let value = value
                .strip_prefix('=')
                .ok_or_else(|| error("a parameter needs `=` and a value"))?;
            rest = if value.starts_with('"') {
                quoted_string(value).ok_or_else(|| error("unterminated quoted parameter value"))?
            } else {
                token(value)
                    .ok_or_else(|| error("a parameter value must be a token or quoted"))?
                    .1
            };
            charset |= name.eq_ignore_ascii_case("charset");
        }
        // One allocation: every event's content type is parsed.
        let mut essence = String::with_capacity(type_.len() + 1 + subtype.len());
        essence.push_str(type_);
        essence.push('/');
        essence.push_str(subtype);
        essence.make_ascii_lowercase();
        Ok(MediaType {
            essence: Cow::Owned(essence),
            charset,
        })
    }

    /// `type/subtype`, lower case.
    pub fn essence(&self) -> &str {
        &self.essence
    }

    fn subtype(&self) -> &str {
        self.essence.split_once('/').map_or("", |(_, s)| s)
    }

    /// JSON-formatted data (json-format §3.1.1): the subtype is `json` or ends in `+json`.
    pub fn is_json(&self) -> bool {
        let subtype = self.subtype();
        subtype == "json" || subtype.ends_with("+json")
    }

    /// Data that is text when it is UTF-8: `text/*`, XML, YAML, form data, scripts, and
    /// anything declaring a `charset`.
    pub fn is_text(&self) -> bool {
        let subtype = self.subtype();
        self.charset
            || self.is_json()
            || self.essence.starts_with("text/")
            || subtype == "xml"
            || subtype.ends_with("+xml")
            || subtype == "yaml"
            || subtype == "x-yaml"
            || subtype.ends_with("+yaml")
            || matches!(
                &*self.essence,
                "application/x-www-form-urlencoded"
                    | "application/javascript"
                    | "application/ecmascript"
                    | "application/graphql"
                    | "application/sql"
            )
    }

    /// The mode a `Content-Type` selects (http-protocol-binding §3, kafka-protocol-binding §3):
    /// `application/cloudevents…` matched case-insensitively.
    pub fn message_mode(content_type: &str) -> MessageMode {
        let lower = content_type.trim_start().to_ascii_lowercase();
        if lower.starts_with("application/cloudevents-batch") {
            MessageMode::Batched
        } else if lower.starts_with("application/cloudevents") {
            match MediaType::parse(content_type.trim()) {
                Ok(m) if m.essence == STRUCTURED => MessageMode::Structured,
                _ => MessageMode::UnknownFormat,
            }
        } else {
            MessageMode::Binary
        }
    }
}

/// What a `Content-Type` says a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageMode {
    /// The JSON event format (`application/cloudevents+json`).
    Structured,
    /// `application/cloudevents-batch…`.
    Batched,
    /// `application/cloudevents+<format>` for a format other than JSON.
    UnknownFormat,
    /// Anything else: the data of a binary-mode event, or of a bare payload.
    Binary,
}

/// No content type, or a JSON one: where Fiso reads a bare body holding an object with
/// `specversion` as the structured CloudEvent it is. Clients that hand-write events send them as
/// `application/json`; the bindings would make that event the data of another.
pub fn is_json_or_none(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|ct| MediaType::parse(ct).is_ok_and(|m| m.is_json()))
}

/// `datacontenttype` must be a media type (spec.md: RFC 2046).
pub fn check(text: &str) -> Result<(), MediaTypeError> {
    MediaType::parse(text).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_types_are_what_the_parser_makes_of_them() {
        for common in COMMON {
            assert_eq!(
                MediaType::parse(common),
                MediaType::parse(&common.to_ascii_uppercase()),
            );
        }
    }

    #[test]
    fn media_types_follow_the_grammar() {
        for valid in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/CloudEvents+JSON; Charset=UTF-8",
            "text/plain;charset=\"us-ascii\"",
            "text/plain ; a=b ;c=\"d;e\\\"f\"",
            "application/vnd.apache.thrift.binary",
            "multipart/form-data; boundary=x-y_z",
        ] {
            assert!(MediaType::parse(valid).is_ok(), "{valid}");
        }
        for invalid in [
            "",
            "json",
            "application/",
            "/json",
            "a b/c",
            "text/plain;",
            "text/plain; charset",
            "text/plain; charset=",
            "text/plain; charset=\"open",
            "text/plain ",
            " text/plain",
            "text/plain\u{7f}",
            "tëxt/plain",
            "text/plain, text/html",
        ] {
            assert!(MediaType::parse(invalid).is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn json_and_text_types() {
        let m = |t: &str| MediaType::parse(t).unwrap();
        for json in [
            "application/json",
            "text/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.x+json",
            "application/cloudevents+json",
        ] {
            assert!(m(json).is_json(), "{json}");
        }
        for not_json in ["application/jsonl", "application/xml", "text/plain"] {
            assert!(!m(not_json).is_json(), "{not_json}");
        }
        for text in [
            "text/plain",
            "application/xml",
            "image/svg+xml",
            "application/octet-stream; charset=utf-8",
        ] {
            assert!(m(text).is_text(), "{text}");
        }
        for bytes in ["application/octet-stream", "image/png", "application/avro"] {
            assert!(!m(bytes).is_text(), "{bytes}");
        }
    }

    #[test]
    fn content_modes() {
        use MessageMode::*;
        for (ct, mode) in [
            ("application/cloudevents+json", Structured),
            ("Application/CloudEvents+JSON; charset=UTF-8", Structured),
            ("application/cloudevents-batch+json", Batched),
            ("application/cloudevents+avro", UnknownFormat),
            ("application/json", Binary),
            ("", Binary),
        ] {
            assert_eq!(MediaType::message_mode(ct), mode, "{ct}");
        }
    }
}
