//! The way from the front door to a running app. The front door asks the
//! agent on the sandbox's handoff socket for a connection to the app; the
//! agent connects inside the sandbox and hands that connection back
//! ([`ds_proto::Handoff`]), so the front door speaks HTTP to the app
//! directly and neither the agent nor the supervisor is in the data path
//! (a pool miss costs one handoff round trip; a WebSocket, the same).
//!
//! The descriptor comes from inside the sandbox, so it is checked: it must
//! be a connected TCP stream socket whose peer is the app's port on the
//! sandbox's loopback. It can only reach what the sandbox reaches anyway;
//! the front door only reads and writes on it.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ds_proto::Handoff;
use tokio::net::TcpStream;
use tracing::warn;

/// How long the agent has to answer (it connects on the sandbox's
/// loopback: normally well under a millisecond; it answers a refusal at
/// once when the app does not accept).
const HANDOVER_WAIT: Duration = Duration::from_secs(2);

/// How connections to an appspace's app went, since the front door started.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Handed over by the agent.
    pub handed_over: AtomicU64,
    /// Not made: the agent refused, did not answer, or sent a bad one.
    pub refused: AtomicU64,
}

/// A connection to the app.
pub type Upstream = TcpStream;

/// A running sandbox's handoff socket and app port.
#[derive(Debug, Clone)]
pub struct AppLink {
    handoff: Arc<Handoff>,
    app_port: u16,
    next_token: Arc<AtomicU64>,
    counters: Arc<LinkCounters>,
    run: u64,
}

impl AppLink {
    /// Links through `handoff` to the app on `app_port` of the sandbox's
    /// run `run`, counting connections into `counters`.
    pub fn new(
        handoff: Arc<Handoff>,
        app_port: u16,
        run: u64,
        counters: Arc<LinkCounters>,
    ) -> Self {
        Self {
            handoff,
            app_port,
            next_token: Arc::default(),
            counters,
            run,
        }
    }

    /// The run of the sandbox it reaches: unique among all runs since the
    /// supervisor started, so pooled connections are never reused with
    /// the next one.
    pub fn id(&self) -> u64 {
        self.run
    }

    /// Whether the sandbox is gone (its agent closed the handoff socket).
    pub fn is_closed(&self) -> bool {
        self.handoff.is_closed()
    }

    /// A connection to the app, asked of the agent.
    pub async fn connect(&self) -> io::Result<Upstream> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let refused = |what: &str| {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            io::Error::new(io::ErrorKind::ConnectionRefused, what.to_owned())
        };
        if self.handoff.send_token(token).await.is_err() {
            return Err(refused("the sandbox is gone"));
        }
        let Some(fd) = self.handoff.take(token, HANDOVER_WAIT).await else {
            return Err(refused("the app did not accept a connection"));
        };
        match app_socket(fd, self.app_port) {
            Ok(conn) => {
                self.counters.handed_over.fetch_add(1, Ordering::Relaxed);
                Ok(conn)
            }
            Err(e) => {
                warn!(error = %e, "the agent handed over a bad app connection");
                Err(refused("the agent handed over a bad connection"))
            }
        }
    }
}

/// Checks that `fd` is a connected TCP socket to the app's port on
/// loopback, and makes it a tokio stream.
pub fn app_socket(fd: OwnedFd, app_port: u16) -> io::Result<TcpStream> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let stat = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err(bad("not a socket".into()));
    }
    let domain = rustix::net::sockopt::socket_domain(&fd)?;
    let kind = rustix::net::sockopt::socket_type(&fd)?;
    if domain != rustix::net::AddressFamily::INET || kind != rustix::net::SocketType::STREAM {
        return Err(bad(format!("not a TCP/IPv4 socket ({domain:?}, {kind:?})")));
    }
    let peer = rustix::net::getpeername(&fd)?
        .and_then(|a| std::net::SocketAddrV4::try_from(a).ok())
        .ok_or_else(|| bad("not connected".into()))?;
    if !peer.ip().is_loopback() || peer.port() != app_port {
        return Err(bad(format!(
            "connected to {peer}, not the app's port {app_port}"
        )));
    }
    let conn = std::net::TcpStream::from(fd);
    conn.set_nonblocking(true)?;
    TcpStream::from_std(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_tcp_connection_to_the_app_port_is_taken() {
        let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = app.local_addr().unwrap().port();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();

        let good = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(app_socket(OwnedFd::from(good), port).is_ok());

        let elsewhere = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        let e = app_socket(OwnedFd::from(elsewhere), port).unwrap_err();
        assert!(e.to_string().contains("not the app's port"), "{e}");

        let (unix, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = app_socket(OwnedFd::from(unix), port).unwrap_err();
        assert!(e.to_string().contains("not a TCP/IPv4 socket"), "{e}");

        let unconnected = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(app_socket(OwnedFd::from(unconnected), port).is_err());

        let file = std::fs::File::open("/dev/null").unwrap();
        let e = app_socket(OwnedFd::from(file), port).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
    }
}
