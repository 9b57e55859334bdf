//! Start-up time: from exec of `fiso link` or `fiso flow` (10 flows) to its first `/readyz`
//! 200, the figure a rollout or a scale-up waits for.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::procs::{flow_yaml, free_port, quiet};
use super::stats::median_duration;

/// The median of `runs` start-ups of `what` (`link` or `flow`).
pub fn median(fiso: &Path, dir: &Path, what: &str, runs: usize) -> Result<Duration> {
    Ok(median_duration(
        (0..runs)
            .map(|_| time(fiso, dir, what))
            .collect::<Result<_>>()?,
    ))
}

/// Time from exec to `/readyz` 200: `fiso link` (the bench link config) or `fiso flow` with
/// 10 flows.
fn time(fiso: &Path, dir: &Path, what: &str) -> Result<Duration> {
    let metrics = free_port()?;
    let mut cmd = Command::new(fiso);
    match what {
        "link" => {
            // Its own proxy port: the one in link.yaml is bound by nothing now, but keep clear.
            let text = std::fs::read_to_string(dir.join("link.yaml"))?;
            let port = free_port()?;
            let text = text
                .lines()
                .map(|l| {
                    if l.starts_with("listenAddr:") {
                        format!("listenAddr: 127.0.0.1:{port}")
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(dir.join("link-startup.yaml"), text)?;
            cmd.arg("link")
                .arg("--config")
                .arg(dir.join("link-startup.yaml"));
        }
        _ => {
            let flows = dir.join("flows10");
            let _ = std::fs::remove_dir_all(&flows);
            std::fs::create_dir_all(&flows)?;
            let upstream: SocketAddr = "127.0.0.1:9".parse()?;
            for i in 0..10 {
                let port = free_port()?;
                std::fs::write(
                    flows.join(format!("f{i}.yaml")),
                    flow_yaml(&format!("f{i}"), port, upstream),
                )?;
            }
            cmd.arg("flow").arg("--config-dir").arg(&flows);
        }
    }
    cmd.args(["--metrics-addr", &format!("127.0.0.1:{metrics}")]);
    let started = Instant::now();
    let mut child = quiet(&mut cmd).spawn()?;
    let deadline = started + Duration::from_secs(30);
    let ready = loop {
        if readyz(metrics) {
            break Some(started.elapsed());
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = child.kill();
    let _ = child.wait();
    ready.with_context(|| format!("fiso {what} never became ready"))
}

/// `GET /readyz` answers 200.
fn readyz(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = [0u8; 16];
    tcp.read(&mut buf)
        .is_ok_and(|n| buf[..n].starts_with(b"HTTP/1.1 200"))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A server on a free port answering each connection's first request with `status_line`.
    fn answering(status_line: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut tcp in listener.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf);
                let _ =
                    tcp.write_all(format!("{status_line}\r\ncontent-length: 0\r\n\r\n").as_bytes());
            }
        });
        port
    }

    #[test]
    fn ready_only_on_200() {
        assert!(readyz(answering("HTTP/1.1 200 OK")));
        assert!(!readyz(answering("HTTP/1.1 503 Service Unavailable")));
        assert!(!readyz(free_port().unwrap()), "nothing listening");
    }
}
