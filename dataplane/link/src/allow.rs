//! Allowed paths: the second concern of the Link chain (after route, before rate limit).
//!
//! An app calls `http://localhost:3500/link/{target}/{path}` and Link forwards `{path}` to the
//! target's upstream, but only when it matches one of the target's `allowedPaths` globs. The
//! globs are a security boundary, so matching never happens on the raw request path: the path
//! is first [`normalise`]d (percent-decoded once, dot segments resolved, empty segments
//! dropped) and the upstream receives exactly the path that was matched, re-[`encoded`].
//! Anything an upstream might interpret differently from us is refused outright (the caller
//! answers 403) rather than guessed at:
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

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Bytes percent-encoded in a path segment sent upstream: everything except RFC 3986 `pchar`
/// (unreserved, sub-delims, `:` and `@`). `%`, `/`, `?`, `#`, space and non-ASCII are encoded,
/// so a decoded segment can never change the structure of the upstream request line.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    // unreserved
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    // sub-delims
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    // pchar extras
    .remove(b':')
    .remove(b'@');

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
    /// Decoded segments, none empty, none `.` or `..`.
    segments: Vec<String>,
    /// The request ended with `/` (or `/.`, `/..`); never set for the root.
    trailing_slash: bool,
    /// `segments` joined, kept so [`NormalPath::as_str`] can lend a `&str`.
    decoded: String,
}

impl NormalPath {
    fn new(segments: Vec<String>, trailing_slash: bool) -> Self {
        let trailing_slash = trailing_slash && !segments.is_empty();
        let mut decoded = format!("/{}", segments.join("/"));
        if trailing_slash {
            decoded.push('/');
        }
        Self {
            segments,
            trailing_slash,
            decoded,
        }
    }

    /// The decoded path, e.g. `/api/v2/a b` (for glob matching and logs).
    pub fn as_str(&self) -> &str {
        &self.decoded
    }

    /// The path re-encoded for the upstream request line: each segment percent-encoded
    /// (RFC 3986 `pchar` kept as is), joined by `/`; a trailing slash of the request is kept.
    pub fn encoded(&self) -> String {
        let segments: Vec<String> = self
            .segments
            .iter()
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        let mut out = format!("/{}", segments.join("/"));
        if self.trailing_slash {
            out.push('/');
        }
        out
    }

    /// The path globs are matched against: the trailing slash is dropped so `/a/` and `/a`
    /// are allowed alike; a glob cannot tell them apart, which avoids surprising 403s.
    fn match_str(&self) -> &str {
        match self.decoded.strip_suffix('/') {
            Some(s) if !s.is_empty() => s,
            _ => &self.decoded,
        }
    }
}

/// Normalises the raw path part (no query) that follows `/link/{target}`; `""` means `/`.
pub fn normalise(raw: &str) -> Result<NormalPath, PathError> {
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
    Ok(NormalPath::new(segments, trailing_slash))
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

/// Compiled `allowedPaths` of one target.
#[derive(Debug, Clone)]
pub struct AllowedPaths {
    /// `None` when the list is empty: every path is allowed.
    set: Option<GlobSet>,
}

impl AllowedPaths {
    /// `*` matches exactly one segment, `**` any depth (including zero segments:
    /// `/api/v2/**` also matches `/api/v2` and `/api/v2/`); other glob syntax per globset
    /// with `literal_separator(true)`. An empty list allows every path. Invalid globs are an
    /// error naming the glob.
    pub fn new(globs: &[String]) -> Result<Self, globset::Error> {
        if globs.is_empty() {
            return Ok(Self { set: None });
        }
        let mut builder = GlobSetBuilder::new();
        for glob in globs {
            // Compile as written first, so an error names the glob the user wrote.
            compile(glob)?;
            for variant in variants(glob) {
                builder.add(compile(&variant)?);
            }
        }
        Ok(Self {
            set: Some(builder.build()?),
        })
    }

    /// Whether `path` may be forwarded. Matching is case-sensitive and ignores a trailing
    /// slash of the request.
    pub fn allows(&self, path: &NormalPath) -> bool {
        self.set
            .as_ref()
            .is_none_or(|set| set.is_match(path.match_str()))
    }

    /// True when the target has no `allowedPaths`, so the layer can skip normalising.
    pub fn allows_all(&self) -> bool {
        self.set.is_none()
    }
}

/// The globs actually compiled for one configured glob. A trailing slash is dropped, as it is
/// from request paths; a trailing `/**` also yields its prefix so `**` can match zero
/// segments (globset's `a/**` requires at least one).
fn variants(glob: &str) -> Vec<String> {
    let glob = match glob.strip_suffix('/') {
        Some(g) if !g.is_empty() => g,
        _ => glob,
    };
    let mut out = vec![glob.to_owned()];
    if let Some(prefix) = glob.strip_suffix("/**") {
        out.push(if prefix.is_empty() { "/" } else { prefix }.to_owned());
    }
    out
}

fn compile(glob: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(globs: &[&str]) -> AllowedPaths {
        let globs: Vec<String> = globs.iter().map(|g| (*g).to_owned()).collect();
        AllowedPaths::new(&globs).expect("valid globs")
    }

    fn norm(raw: &str) -> NormalPath {
        normalise(raw).unwrap_or_else(|e| panic!("{raw:?} should normalise: {e}"))
    }

    /// How an escape attempt is stopped.
    #[derive(Debug)]
    enum Stopped {
        /// `normalise` refuses it with this error.
        Refused(PathError),
        /// It normalises to this path, which `/api/v2/**` does not allow.
        NotAllowed(&'static str),
    }

    #[test]
    fn escape_attempts_are_refused_or_not_allowed() {
        use PathError::*;
        use Stopped::*;
        let cases: &[(&str, Stopped)] = &[
            ("/../admin", Refused(Escapes)),
            ("/..", Refused(Escapes)),
            ("/api/../../admin", Refused(Escapes)),
            ("/api/v2/../admin", NotAllowed("/api/admin")),
            ("/api/v2/../../admin", NotAllowed("/admin")),
            ("/api/v2/%2e%2e/admin", Refused(EncodedDot)),
            ("/api/v2/%2E%2E/admin", Refused(EncodedDot)),
            ("/api/v2/.%2e/admin", Refused(EncodedDot)),
            ("/api/v2/%2e./admin", Refused(EncodedDot)),
            ("/api/v2/%2e/admin", Refused(EncodedDot)),
            ("/api/v2/..%2fadmin", Refused(EncodedSeparator)),
            ("/api/v2/..%2Fadmin", Refused(EncodedSeparator)),
            ("/api/v2/%2e%2e%2fadmin", Refused(EncodedSeparator)),
            ("/api/v2/..%5cadmin", Refused(EncodedSeparator)),
            ("/api/v2/..%5Cadmin", Refused(EncodedSeparator)),
            ("/api/v2/%252e%252e/admin", Refused(DoubleEncoded)),
            ("/api/v2/%252f", Refused(DoubleEncoded)),
            ("/api/v2/%25252e%25252e", Refused(DoubleEncoded)),
            ("/api/v2/..;/admin", Refused(DotSegmentParameter)),
            ("/api/v2/..%3b/admin", Refused(DotSegmentParameter)),
            ("/api/v2/..\\admin", Refused(Backslash)),
            ("/api/v2\\..\\..\\admin", Refused(Backslash)),
            ("/api/v2/%00", Refused(ControlCharacter)),
            ("/api/v2/a%0d%0aHost:x", Refused(ControlCharacter)),
            ("/api/v2/a\u{7f}", Refused(ControlCharacter)),
            ("/api/v2/%zz", Refused(InvalidEncoding)),
            ("/api/v2/%2", Refused(InvalidEncoding)),
            ("/api/v2/%", Refused(InvalidEncoding)),
            ("/api/v2/%c0%ae%c0%ae/admin", Refused(InvalidEncoding)),
            ("/api/v2/%ff", Refused(InvalidEncoding)),
            ("//api/v2/../../admin", NotAllowed("/admin")),
            ("/api/v2/./../../admin", NotAllowed("/admin")),
            ("/API/v2/x", NotAllowed("/API/v2/x")),
            ("/api/v2x/y", NotAllowed("/api/v2x/y")),
            ("/api/v3/y", NotAllowed("/api/v3/y")),
            ("/api", NotAllowed("/api")),
            ("", NotAllowed("/")),
        ];
        let allow = allowed(&["/api/v2/**"]);
        for (raw, stopped) in cases {
            match (normalise(raw), stopped) {
                (Err(got), Refused(want)) => assert_eq!(&got, want, "{raw:?}"),
                (Ok(path), NotAllowed(want)) => {
                    assert_eq!(path.as_str(), *want, "{raw:?}");
                    assert!(!allow.allows(&path), "{raw:?} must not be allowed");
                }
                (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn prefix_escape_with_dot_dot_is_not_allowed() {
        let path = norm("/api/v2/../admin");
        assert_eq!(path.as_str(), "/api/admin");
        assert!(!allowed(&["/api/v2/**"]).allows(&path));
        assert!(allowed(&["/api/**"]).allows(&path));
    }

    #[test]
    fn allowed_paths_under_double_star() {
        let allow = allowed(&["/api/v2/**"]);
        for (raw, want) in [
            ("/api/v2", "/api/v2"),
            ("/api/v2/", "/api/v2/"),
            ("/api/v2/orders", "/api/v2/orders"),
            ("/api/v2/orders/1/items", "/api/v2/orders/1/items"),
            ("//api//v2//orders", "/api/v2/orders"),
            ("/api/v2/x/../y", "/api/v2/y"),
            ("/api/v2/./orders/.", "/api/v2/orders/"),
            ("/api/v2/a%20b", "/api/v2/a b"),
            ("/api/v2/file%2ejson", "/api/v2/file.json"),
            ("/api/v2/...", "/api/v2/..."),
            ("/api/v2/a;b=c", "/api/v2/a;b=c"),
        ] {
            let path = norm(raw);
            assert_eq!(path.as_str(), want, "{raw:?}");
            assert!(allow.allows(&path), "{raw:?} should be allowed");
        }
    }

    #[test]
    fn single_star_matches_exactly_one_segment() {
        let allow = allowed(&["/users/*"]);
        assert!(allow.allows(&norm("/users/7")));
        assert!(allow.allows(&norm("/users/7/")));
        assert!(!allow.allows(&norm("/users/7/x")));
        assert!(!allow.allows(&norm("/users")));
        assert!(!allow.allows(&norm("/users/")));
    }

    #[test]
    fn double_star_in_the_middle_and_at_root() {
        let allow = allowed(&["/a/**/z"]);
        assert!(allow.allows(&norm("/a/z")));
        assert!(allow.allows(&norm("/a/b/c/z")));
        assert!(!allow.allows(&norm("/a/b/c")));

        let root = allowed(&["/**"]);
        assert!(root.allows(&norm("")));
        assert!(root.allows(&norm("/")));
        assert!(root.allows(&norm("/x/y")));
        assert!(!root.allows_all());
    }

    #[test]
    fn trailing_slash_in_glob_is_ignored() {
        let allow = allowed(&["/api/v2/"]);
        assert!(allow.allows(&norm("/api/v2")));
        assert!(allow.allows(&norm("/api/v2/")));
        assert!(!allow.allows(&norm("/api/v2/x")));
    }

    #[test]
    fn several_globs_allow_their_union() {
        let allow = allowed(&["/health", "/api/*/orders"]);
        assert!(allow.allows(&norm("/health")));
        assert!(allow.allows(&norm("/api/v1/orders")));
        assert!(!allow.allows(&norm("/api/v1/users")));
        assert!(!allow.allows(&norm("/healthz")));
    }

    #[test]
    fn empty_list_allows_all() {
        let allow = AllowedPaths::new(&[]).expect("empty list");
        assert!(allow.allows_all());
        assert!(allow.allows(&norm("/")));
        assert!(allow.allows(&norm("/anything/at/all")));
    }

    #[test]
    fn invalid_glob_is_an_error_naming_it() {
        let err = AllowedPaths::new(&["/ok/**".into(), "/a/[b".into()]).expect_err("invalid");
        assert_eq!(err.glob(), Some("/a/[b"));
        assert!(err.to_string().contains("/a/[b"), "{err}");
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

/// The allowed-paths concern: a request whose normalised path matches none of the target's
/// `allowedPaths` is refused with 403 before anything else is spent on it.
#[derive(Clone)]
pub struct Allow {
    allowed: std::sync::Arc<AllowedPaths>,
}

impl Allow {
    pub fn new(allowed: AllowedPaths) -> Self {
        Allow {
            allowed: std::sync::Arc::new(allowed),
        }
    }
}

impl crate::layer::Concern for Allow {
    fn call(
        &self,
        req: crate::response::Request,
        next: crate::layer::Next,
    ) -> futures::future::BoxFuture<'static, crate::response::Response> {
        let refused = match req.extensions().get::<crate::forward::Forward>() {
            Some(f) if self.allowed.allows(&f.path) => None,
            Some(f) => Some(format!(
                "path {} is not allowed for target `{}`",
                f.path.as_str(),
                f.target
            )),
            None => Some("no target for this request".to_owned()),
        };
        match refused {
            Some(message) => {
                let response =
                    crate::response::error(crate::response::ErrorCode::PathNotAllowed, message);
                Box::pin(async move { response })
            }
            None => Box::pin(crate::layer::answer(next, req)),
        }
    }
}
