//! A flow file, as `fiso validate` reads it: YAML parse, semantic validation, cross-flow checks
//! and the rendering of every diagnostic. Any input must give a config or diagnostics, never a
//! panic.

#![no_main]

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};

use fiso_config::validate::{check_project, SourceFile};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fuzz_target!(
    init: {
        // `fiso_config::cel_check::compile` deliberately catches panics of the CEL parser and
        // reports them as config errors; libFuzzer's abort-on-any-panic hook would count those
        // as crashes. Remember the message instead, and abort below only for a panic that
        // escapes our code.
        panic::set_hook(Box::new(|info| {
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
        }));
    },
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if panic::catch_unwind(AssertUnwindSafe(|| check(text))).is_err() {
            let message = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
            eprintln!("panic escaped the flow config check: {message}");
            std::process::abort();
        }
    }
);

fn check(text: &str) {
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
