//! The allowed-paths check on normalised paths, escape attempts included.

use super::*;
use crate::path::{normalise, PathError};

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
