//! libFuzzer entry for [`fiso_fuzz_targets::flow_config`] (what it exercises and its input
//! format are documented there).

#![no_main]

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};

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
        if panic::catch_unwind(AssertUnwindSafe(|| fiso_fuzz_targets::flow_config::run(data))).is_err() {
            let message = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
            eprintln!("panic escaped the flow config check: {message}");
            std::process::abort();
        }
    }
);
