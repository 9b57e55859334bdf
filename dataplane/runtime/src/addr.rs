//! Listen addresses as users write them in config and env vars (`FISO_METRICS_ADDR=:9090`).

use std::net::SocketAddr;

use fiso_config::validate::normalize_listen_addr;

#[derive(Debug, thiserror::Error)]
#[error("`{addr}` is not a listen address (expected `:9090`, `0.0.0.0:9090` or `127.0.0.1:0`)")]
pub struct AddrError {
    pub addr: String,
}

/// `:9090` → `0.0.0.0:9090` (all interfaces), `localhost:9090` → `127.0.0.1:9090`, and any
/// literal `ip:port`. Shares its rules with `fiso validate` so a config that validates binds.
pub fn parse_listen_addr(addr: &str) -> Result<SocketAddr, AddrError> {
    normalize_listen_addr(addr.trim())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| AddrError {
            addr: addr.to_owned(),
        })
}

/// What to add to a failed bind's message: a taken port, the usual cause, says what to check.
pub fn bind_hint(error: &std::io::Error) -> &'static str {
    if error.kind() == std::io::ErrorKind::AddrInUse {
        " (the port is taken: is another fiso, or another program, listening there?)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_port_means_all_interfaces() {
        assert_eq!(
            parse_listen_addr(":9090").unwrap(),
            "0.0.0.0:9090".parse().unwrap()
        );
    }

    #[test]
    fn literal_and_localhost_addresses() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("localhost:8081").unwrap(),
            "127.0.0.1:8081".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("[::]:9090").unwrap(),
            "[::]:9090".parse().unwrap()
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "9090", ":port", "host:9090", ":99999"] {
            assert!(
                parse_listen_addr(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
