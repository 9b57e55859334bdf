//! The Link's allowed-paths check: normalise the request path, then match the target's globs.
//!
//! Input: the raw path, then optionally `\n`-separated `allowedPaths` globs (none given: a
//! realistic fixed set). Besides "never panics", a normalised path must be safe to forward: no
//! dot segments, no empty segments, no backslash, and its upstream encoding normalises back to
//! the same path (what the upstream sees is what we matched).

use fiso_link::allow::AllowedPaths;
use fiso_link::path::normalise;

const DEFAULT_GLOBS: [&str; 4] = ["/api/v2/**", "/users/*/orders", "/health", "/static/*.css"];

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let raw = lines.next().unwrap_or_default();
    let mut globs: Vec<String> = lines.map(str::to_owned).collect();
    if globs.is_empty() {
        globs = DEFAULT_GLOBS.iter().map(|g| (*g).to_owned()).collect();
    }
    let Ok(allowed) = AllowedPaths::new(&globs) else {
        return;
    };
    let Ok(path) = normalise(raw) else {
        return;
    };
    let accepted = allowed.allows(&path);

    for shown in [path.as_str(), path.encoded().as_str()] {
        assert!(shown.starts_with('/'), "{raw:?} → {shown:?}: not absolute");
        assert!(!shown.contains('\\'), "{raw:?} → {shown:?}: backslash");
        assert!(!shown.contains("//"), "{raw:?} → {shown:?}: empty segment");
        assert!(
            !shown.split('/').any(|s| s == ".." || s == "."),
            "{raw:?} → {shown:?}: dot segment (accepted: {accepted})"
        );
    }
    let encoded = path.encoded();
    let again = normalise(&encoded)
        .unwrap_or_else(|e| panic!("{raw:?} → {encoded:?} does not normalise again: {e}"));
    assert_eq!(again, path, "{raw:?} → {encoded:?} normalises differently");
    assert_eq!(
        allowed.allows(&again),
        accepted,
        "{raw:?}: the re-encoded path is judged differently"
    );
}
