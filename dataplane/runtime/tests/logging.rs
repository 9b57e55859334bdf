//! The global subscriber: one test per binary, since it can be installed only once.

use fiso_runtime::logging::{self, LogFormat, LogSettings};
use serde_json::Value;

#[test]
fn pretty_console_with_json_lines_in_the_dev_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fiso/.dev/orders.log");
    let guard = LogSettings::new(LogFormat::Pretty, "info")
        .with_file(&path)
        .init()
        .unwrap();
    assert!(guard.installed());

    tracing::info!(flow = "orders", events = 3, "flow started");
    tracing::debug!("below the level");
    tracing::warn!(flow = "orders", "sink slow");

    let second = logging::init(LogFormat::Json, "debug").unwrap();
    assert!(!second.installed(), "the first subscriber stays");
    tracing::debug!("still below the level");

    drop(guard); // flushes the file
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["level"], "INFO");
    assert_eq!(lines[0]["message"], "flow started");
    assert_eq!(lines[0]["flow"], "orders");
    assert_eq!(lines[0]["events"], 3);
    assert!(lines[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[1]["level"], "WARN");
    assert!(!text.contains('\x1b'), "no colour codes in the file");
}
