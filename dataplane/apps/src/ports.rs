//! `port: 0`: a port from `defaultPortRange` that nothing listens on now.
//!
//! A port is probed by binding it on `listenHost` and releasing it for the guest; another
//! process could take it in between, in which case the guest's `bind` fails, it exits, and the
//! restart asks again (the taken port is skipped then).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, TcpListener};

use fiso_config::apps::PortRange;

#[derive(Debug, Default)]
pub(crate) struct Ports {
    /// Ports given to apps of this process.
    given: HashSet<u16>,
}

// Only apps that run take ports: a build without wasmer starts none.
#[cfg_attr(not(feature = "wasmer"), allow(dead_code))]
impl Ports {
    /// Marks a configured port as taken, so automatic allocation skips it.
    pub(crate) fn reserve(&mut self, port: u16) {
        self.given.insert(port);
    }

    pub(crate) fn release(&mut self, port: u16) {
        self.given.remove(&port);
    }

    /// The first port of `range` that no app was given and that binds on `host`.
    pub(crate) fn allocate(&mut self, range: PortRange, host: IpAddr) -> Option<u16> {
        let port = (range.min..=range.max).find(|p| {
            !self.given.contains(p) && TcpListener::bind(SocketAddr::new(host, *p)).is_ok()
        })?;
        self.given.insert(port);
        Some(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_given_and_busy_ports_and_fails_when_none_is_left() {
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = busy.local_addr().unwrap().port();
        let range = PortRange { min: b, max: b };
        let mut ports = Ports::default();
        assert_eq!(ports.allocate(range, host), None, "a bound port is skipped");
        drop(busy);
        assert_eq!(ports.allocate(range, host), Some(b));
        assert_eq!(ports.allocate(range, host), None, "a given port is skipped");
        ports.release(b);
        assert_eq!(ports.allocate(range, host), Some(b));
    }
}
