//! Real signals sent to this test process (its own binary, so no other test sees them).

use std::process::Command;
use std::time::Duration;

use fiso_runtime::shutdown::shutdown_signal;

fn send(signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_then_sigint_cancel_the_token() {
    for signal in ["TERM", "INT"] {
        let token = shutdown_signal();
        assert!(!token.is_cancelled());
        send(signal);
        // A deadline, not a synchronisation delay: the handler was installed before `send`.
        tokio::time::timeout(Duration::from_secs(20), token.cancelled())
            .await
            .unwrap_or_else(|_| panic!("SIG{signal} did not cancel the token"));
    }
}
