//! A flow file, as `fiso validate` reads it: YAML parse, semantic validation, cross-flow checks
//! and the rendering of every diagnostic. Any input must give a config or diagnostics, never a
//! panic.

use fiso_config::validate::{check_project, SourceFile};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let flow = SourceFile {
        path: "flows/fuzz.yaml".to_owned(),
        text: text.to_owned(),
    };
    // The same text as a second file exercises the cross-flow checks (duplicate names, shared
    // listen addresses) on whatever parsed.
    let twin = SourceFile {
        path: "flows/twin.yaml".to_owned(),
        text: text.to_owned(),
    };
    let (_project, diagnostics) = check_project(&[flow, twin], None);
    let _ = diagnostics.to_string();
}
