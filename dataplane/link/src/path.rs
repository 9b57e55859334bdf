//! Request-path normalisation: what the route layer turns `{path}` of
//! `/link/{target}/{path}` into before the allowed-paths check ([`crate::allow`]) sees it and
//! the upstream receives it.
//!
//! The allowed-path globs are a security boundary, so matching never happens on the raw
//! request path: the path is first [`normalise`]d (percent-decoded once, dot segments
//! resolved, empty segments dropped) and the upstream receives exactly the path that was
//! matched, re-[`encoded`]. Anything an upstream might interpret differently from us is
//! refused outright (the route layer answers 403) rather than guessed at:
//!
//! * `..` that would climb above the root ([`PathError::Escapes`]);
//! * percent-encoded dot segments such as `%2e%2e` or `.%2E` ([`PathError::EncodedDot`]);
//! * encoded separators `%2f` / `%5c` inside a segment ([`PathError::EncodedSeparator`]);
//! * any raw backslash ([`PathError::Backslash`]);
//! * control characters, raw or decoded, NUL included ([`PathError::ControlCharacter`]);
//! * bad escapes and bytes that are not UTF-8 once decoded, such as the overlong `%c0%ae`
//!   ([`PathError::InvalidEncoding`]);
//! * a segment that still holds a percent escape after one decode, such as `%252e`: an
//!   upstream that decodes twice would see something we never matched
//!   ([`PathError::DoubleEncoded`]);
//! * a dot segment carrying `;` parameters such as `..;`, which Tomcat-style servers treat
//!   as `..` ([`PathError::DotSegmentParameter`]).
//!
//! A plain `..` that stays inside the root is resolved (`/api/v2/x/../y` is `/api/v2/y`);
//! one that leaves a glob's prefix (`/api/v2/../admin` is `/admin`) is then simply not
//! allowed by `/api/v2/**`.
//!
//! [`encoded`]: NormalPath::encoded

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What a path segment sent upstream keeps unencoded besides letters and digits: the rest of
/// RFC 3986 `pchar` (unreserved, sub-delims, `:` and `@`).
const UNENCODED_PUNCTUATION: &[u8] = b"-._~!$&'()*+,;=:@";

/// Bytes percent-encoded in a path segment sent upstream: everything except `pchar`. `%`, `/`,
/// `?`, `#`, space and non-ASCII are encoded, so a decoded segment can never change the
/// structure of the upstream request line.
const SEGMENT: &AsciiSet = &without(NON_ALPHANUMERIC, UNENCODED_PUNCTUATION);

const fn without(set: &AsciiSet, bytes: &[u8]) -> AsciiSet {
    // `AsciiSet` is not `Copy`: a union with the empty set is how a const fn copies one.
    let mut set = set.union(AsciiSet::EMPTY);
    let mut i = 0;
    while i < bytes.len() {
        set = set.remove(bytes[i]);
        i += 1;
    }
    set
}

/// Why a request path was refused before any glob was consulted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `..` segment would climb above the root.
    #[error("path escapes the root with `..`")]
    Escapes,
    /// `%2f` or `%5c` inside a segment: upstreams disagree on whether it separates segments.
    #[error("path contains an encoded `/` or `\\` inside a segment")]
    EncodedSeparator,
    /// A segment that decodes to `.` or `..`: only a literal dot segment is resolved.
    #[error("path contains a percent-encoded dot segment")]
    EncodedDot,
    /// A segment still contains a percent escape after one decode (`%252e`).
    #[error("path contains a double percent-encoded sequence")]
    DoubleEncoded,
    /// A `.` or `..` segment followed by `;` parameters (`..;`).
    #[error("path contains a dot segment with `;` parameters")]
    DotSegmentParameter,
    /// A `%` not followed by two hex digits, or decoded bytes that are not UTF-8.
    #[error("path has an invalid percent escape or is not UTF-8")]
    InvalidEncoding,
    /// A raw `\`, which some servers treat as a separator.
    #[error("path contains a backslash")]
    Backslash,
    /// NUL or another control character, raw or decoded.
    #[error("path contains a control character")]
    ControlCharacter,
}

/// A request path after normalisation: percent-decoded per segment, `.`/`..` resolved, empty
/// segments (`//`) dropped. Always starts with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    /// `/`, its decoded segments joined by `/` (none holds a `/`: [`normalise`] refuses an
    /// encoded one), and a trailing `/` when the path had one. [`NormalPath::as_str`] lends it.
    decoded: String,
    /// The request ended with `/` (or `/.`, `/..`); never set for the root.
    trailing_slash: bool,
}

impl NormalPath {
    fn new(segments: &[String], trailing_slash: bool) -> Self {
        let trailing_slash = trailing_slash && !segments.is_empty();
        let mut decoded =
            String::with_capacity(segments.iter().map(|s| s.len() + 1).sum::<usize>() + 1);
        for segment in segments {
            decoded.push('/');
            decoded.push_str(segment);
        }
        if decoded.is_empty() || trailing_slash {
            decoded.push('/');
        }
        Self {
            decoded,
            trailing_slash,
        }
    }

    /// The decoded segments.
    fn segments(&self) -> impl Iterator<Item = &str> {
        let inner = &self.decoded[1..];
        let inner = if self.trailing_slash {
            &inner[..inner.len() - 1]
        } else {
            inner
        };
        inner.split('/').filter(|s| !s.is_empty())
    }

    /// The decoded path, e.g. `/api/v2/a b` (for glob matching and logs).
    pub fn as_str(&self) -> &str {
        &self.decoded
    }

    /// The path re-encoded for the upstream request line: each segment percent-encoded
    /// (RFC 3986 `pchar` kept as is), joined by `/`; a trailing slash of the request is kept.
    pub fn encoded(&self) -> String {
        let mut out = String::with_capacity(self.decoded.len());
        self.write_encoded(&mut out);
        out
    }

    /// Appends [`encoded`](Self::encoded) to `out` (the upstream's request line is built in
    /// one buffer).
    pub fn write_encoded(&self, out: &mut String) {
        out.push('/');
        for (i, segment) in self.segments().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.extend(utf8_percent_encode(segment, SEGMENT));
        }
        if self.trailing_slash {
            out.push('/');
        }
    }

    /// Whether this is `/` itself.
    pub fn is_root(&self) -> bool {
        self.decoded == "/"
    }

    /// The path globs are matched against: the trailing slash is dropped so `/a/` and `/a`
    /// are allowed alike; a glob cannot tell them apart, which avoids surprising 403s.
    pub(crate) fn match_str(&self) -> &str {
        match self.decoded.strip_suffix('/') {
            Some(s) if !s.is_empty() => s,
            _ => &self.decoded,
        }
    }
}

/// Normalises the raw path part (no query) that follows `/link/{target}`; `""` means `/`.
pub fn normalise(raw: &str) -> Result<NormalPath, PathError> {
    if is_already_normal(raw) {
        return Ok(NormalPath {
            decoded: raw.to_owned(),
            trailing_slash: raw.len() > 1 && raw.ends_with('/'),
        });
    }
    normalise_each_segment(raw)
}

fn normalise_each_segment(raw: &str) -> Result<NormalPath, PathError> {
    if raw.contains('\\') {
        return Err(PathError::Backslash);
    }
    let mut segments: Vec<String> = Vec::new();
    for raw_segment in raw.split('/').filter(|s| !s.is_empty()) {
        let segment = checked_segment(raw_segment)?;
        if segment == ".." {
            segments.pop().ok_or(PathError::Escapes)?;
        } else if segment != "." {
            segments.push(segment);
        }
    }
    // RFC 3986 remove_dot_segments: `/a/.` and `/a/b/..` both end with a slash.
    let trailing_slash = matches!(raw.rsplit('/').next(), Some("" | "." | ".."));
    Ok(NormalPath::new(&segments, trailing_slash))
}

/// The common path, which every rule below leaves as it is: it starts with `/`, has no empty
/// segment, no segment starting with `.`, and only characters a segment is written with
/// unencoded (so no `%` to decode, no control character, no backslash).
fn is_already_normal(raw: &str) -> bool {
    raw.starts_with('/')
        && !raw.contains("//")
        && !raw.contains("/.")
        && raw
            .bytes()
            .all(|b| b == b'/' || b.is_ascii_alphanumeric() || UNENCODED_PUNCTUATION.contains(&b))
}

/// Decodes one non-empty raw segment and applies every per-segment refusal rule.
fn checked_segment(raw: &str) -> Result<String, PathError> {
    let decoded = decode(raw)?;
    if decoded.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    if decoded.contains(['/', '\\']) {
        return Err(PathError::EncodedSeparator);
    }
    if has_percent_escape(&decoded) {
        return Err(PathError::DoubleEncoded);
    }
    let is_dot = matches!(decoded.as_str(), "." | "..");
    if is_dot && raw.contains('%') {
        return Err(PathError::EncodedDot);
    }
    if let Some((head, _params)) = decoded.split_once(';') {
        if matches!(head, "." | "..") {
            return Err(PathError::DotSegmentParameter);
        }
    }
    Ok(decoded)
}

/// Percent-decodes once, strictly: unlike `percent_encoding::percent_decode`, a `%` without
/// two hex digits is an error rather than passed through, so no odd escape reaches upstream.
fn decode(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|b| hex_value(*b));
            let lo = bytes.get(i + 2).and_then(|b| hex_value(*b));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::InvalidEncoding);
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::InvalidEncoding)
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// True when `s` contains `%` followed by two hex digits, i.e. something a second decode
/// would turn into another character.
fn has_percent_escape(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> NormalPath {
        normalise(raw).unwrap_or_else(|e| panic!("{raw:?} should normalise: {e}"))
    }

    #[test]
    fn a_path_already_normal_takes_the_short_way_to_the_same_result() {
        for raw in [
            "",
            "/",
            "/a",
            "/a/",
            "/api/v2/orders",
            "/a-b_c~d/e.json",
            "/x;v=1/@user:1/(a)*+,!$&'",
            "/a//b",
            "/a/./b",
            "/.well-known/x",
            "/a/..",
            "/a%2Fb",
            "/caf%C3%A9",
            "/a b",
            "/a\\b",
            "/é",
        ] {
            assert_eq!(
                normalise(raw),
                normalise_each_segment(raw),
                "{raw:?} (short way: {})",
                is_already_normal(raw)
            );
        }
        assert!(is_already_normal("/api/v2/orders"));
    }

    #[test]
    fn root_and_empty_normalise_to_slash() {
        for raw in ["", "/", "//", "/.", "/./", "/a/.."] {
            let path = norm(raw);
            assert_eq!(path.as_str(), "/", "{raw:?}");
            assert_eq!(path.encoded(), "/", "{raw:?}");
            assert_eq!(path, norm("/"), "{raw:?}");
        }
    }

    #[test]
    fn trailing_slash_is_kept() {
        assert_eq!(norm("/a/").encoded(), "/a/");
        assert_eq!(norm("/a").encoded(), "/a");
        assert_eq!(norm("/a//").encoded(), "/a/");
        assert_eq!(norm("/a/b/..").encoded(), "/a/");
    }

    #[test]
    fn encoded_reencodes_each_segment() {
        for (raw, decoded, encoded) in [
            ("/api/v2/a%20b", "/api/v2/a b", "/api/v2/a%20b"),
            ("/caf%C3%A9", "/café", "/caf%C3%A9"),
            ("/caf%c3%a9", "/café", "/caf%C3%A9"),
            ("/café", "/café", "/caf%C3%A9"),
            ("/q%3Fx=1", "/q?x=1", "/q%3Fx=1"),
            ("/frag%23top", "/frag#top", "/frag%23top"),
            ("/100%25", "/100%", "/100%25"),
            (
                "/a:b@c!$&'()*+,;=-._~",
                "/a:b@c!$&'()*+,;=-._~",
                "/a:b@c!$&'()*+,;=-._~",
            ),
            ("/a\"<>`{}|^", "/a\"<>`{}|^", "/a%22%3C%3E%60%7B%7D%7C%5E"),
        ] {
            let path = norm(raw);
            assert_eq!(path.as_str(), decoded, "{raw:?}");
            assert_eq!(path.encoded(), encoded, "{raw:?}");
        }
    }

    #[test]
    fn encoded_round_trips_through_normalise() {
        for raw in [
            "/api/v2/a%20b",
            "/caf%C3%A9/",
            "/q%3Fx/frag%23top",
            "/100%25/%E2%9C%93",
            "/a:b@c;d=e",
        ] {
            let path = norm(raw);
            let again = norm(&path.encoded());
            assert_eq!(again, path, "{raw:?}");
            assert_eq!(again.encoded(), path.encoded(), "{raw:?}");
        }
    }
}
