//! The guest's network: the host's, through wasix's `LocalNetworking` (crate `virtual-net`,
//! feature `host-net`; the same crate wasmer-wasix uses), except that a listener
//! asking for "any address" (`0.0.0.0`, `::`) is bound to the app's `listenHost` instead, so a
//! guest written to listen everywhere is still reachable only where the config allows
//! (loopback by default). Outbound connections (a database, an API) are the host's.

use std::net::{IpAddr, SocketAddr};

use virtual_net::host::LocalNetworking;
use virtual_net::{
    NetworkError, VirtualNetworking, VirtualTcpListener, VirtualTcpSocket, VirtualUdpSocket,
};

type Result<T> = std::result::Result<T, NetworkError>;

#[derive(Debug)]
pub(crate) struct HostNet {
    inner: LocalNetworking,
    listen_host: IpAddr,
}

impl HostNet {
    /// Must be called inside a Tokio runtime (the socket reactor's).
    pub(crate) fn new(listen_host: IpAddr) -> Self {
        HostNet {
            inner: LocalNetworking::new(),
            listen_host,
        }
    }

    fn local(&self, addr: SocketAddr) -> SocketAddr {
        if addr.ip().is_unspecified() {
            SocketAddr::new(self.listen_host, addr.port())
        } else {
            addr
        }
    }
}

#[async_trait::async_trait]
impl VirtualNetworking for HostNet {
    async fn listen_tcp(
        &self,
        addr: SocketAddr,
        only_v6: bool,
        reuse_port: bool,
        reuse_addr: bool,
    ) -> Result<Box<dyn VirtualTcpListener + Sync>> {
        self.inner
            .listen_tcp(self.local(addr), only_v6, reuse_port, reuse_addr)
            .await
    }

    async fn bind_udp(
        &self,
        addr: SocketAddr,
        reuse_port: bool,
        reuse_addr: bool,
    ) -> Result<Box<dyn VirtualUdpSocket + Sync>> {
        self.inner
            .bind_udp(self.local(addr), reuse_port, reuse_addr)
            .await
    }

    async fn connect_tcp(
        &self,
        addr: SocketAddr,
        peer: SocketAddr,
    ) -> Result<Box<dyn VirtualTcpSocket + Sync>> {
        self.inner.connect_tcp(addr, peer).await
    }

    async fn resolve(
        &self,
        host: &str,
        port: Option<u16>,
        dns_server: Option<IpAddr>,
    ) -> Result<Vec<IpAddr>> {
        self.inner.resolve(host, port, dns_server).await
    }
}
