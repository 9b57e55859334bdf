//! The README's configuration reference is generated from the schema; this fails when it drifts.

#[test]
fn readme_config_reference_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let current = fiso_config::reference::section(&readme, "config-reference")
        .expect("README has the config-reference markers");
    assert!(
        current == fiso_config::reference::markdown(),
        "README config reference is stale: run `cargo xtask docs`"
    );
}
