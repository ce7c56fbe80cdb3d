//! The way from the front door to a running app. The agent connects to the
//! app inside the sandbox and hands that connection over on the handoff
//! socket ([`ds_proto::Handoff`]), so that the host speaks HTTP to the app
//! directly and neither the agent nor the multiplexer is in the data path.
//! When that fails (no answer in time, or a descriptor that is not what we
//! asked for), the exchange goes over an HTTP stream on the channel, which
//! the agent splices to the app, as before.
//!
//! The descriptor comes from inside the sandbox, so it is checked: it must
//! be a connected TCP stream socket whose peer is the app's port on the
//! sandbox's loopback. It can only reach what the sandbox reaches anyway;
//! the host only reads and writes on it.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ds_proto::{ControlMessage, Handoff, ProtoError, ProtoStream, SessionHandle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::{debug, warn};

/// How long the agent has to hand a connection over before the channel is
/// used instead (it connects on the sandbox's loopback: normally well under
/// a millisecond; it sends nothing when the app does not accept).
const HANDOVER_WAIT: Duration = Duration::from_millis(250);

/// How connections to an appspace's app were made, since the host started.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Handed over by the agent (the usual way).
    pub handed_over: AtomicU64,
    /// HTTP streams on the channel (the fallback).
    pub over_channel: AtomicU64,
}

/// A running sandbox's channel, handoff socket and app port.
#[derive(Debug, Clone)]
pub struct AppLink {
    handle: SessionHandle,
    handoff: Arc<Handoff>,
    app_port: u16,
    next_token: Arc<AtomicU64>,
    counters: Arc<LinkCounters>,
    id: u64,
}

/// Numbers links, so that connections made through one sandbox are never
/// reused with the next one.
static NEXT_LINK_ID: AtomicU64 = AtomicU64::new(1);

impl AppLink {
    /// Links through `handle` and `handoff` to the app on `app_port`,
    /// counting connections into `counters`.
    pub fn new(
        handle: SessionHandle,
        handoff: Arc<Handoff>,
        app_port: u16,
        counters: Arc<LinkCounters>,
    ) -> Self {
        Self {
            handle,
            handoff,
            app_port,
            next_token: Arc::default(),
            counters,
            id: NEXT_LINK_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Unique to this sandbox's run among all links made since the host
    /// started.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A connection to the app: handed over by the agent when it can be,
    /// else an HTTP stream on the channel.
    pub async fn connect(&self) -> Result<Upstream, ProtoError> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let asked = self
            .handle
            .send_control(ControlMessage::ConnectApp { token })
            .await;
        if asked.is_ok() {
            match self.handoff.take(token, HANDOVER_WAIT).await {
                Some(fd) => match app_socket(fd, self.app_port) {
                    Ok(conn) => {
                        self.counters.handed_over.fetch_add(1, Ordering::Relaxed);
                        return Ok(Upstream::Direct(conn));
                    }
                    Err(e) => warn!(error = %e, "the agent handed over a bad app connection"),
                },
                None => debug!("no app connection handed over in time; using the channel"),
            }
        }
        let stream = self.handle.open_http().await?;
        self.counters.over_channel.fetch_add(1, Ordering::Relaxed);
        Ok(Upstream::Channel(stream))
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

/// A connection to the app, either way.
#[derive(Debug)]
pub enum Upstream {
    /// The app's own socket, handed over by the agent.
    Direct(TcpStream),
    /// An HTTP stream on the channel, spliced to the app by the agent.
    Channel(ProtoStream),
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Direct(s) => Pin::new(s).poll_read(cx, buf),
            Upstream::Channel(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Direct(s) => Pin::new(s).poll_write(cx, buf),
            Upstream::Channel(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Direct(s) => Pin::new(s).poll_flush(cx),
            Upstream::Channel(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Direct(s) => Pin::new(s).poll_shutdown(cx),
            Upstream::Channel(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
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
