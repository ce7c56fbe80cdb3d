//! The front door's connection loop: plain TCP or TLS, each connection
//! served by hyper's HTTP/1.1 server with limits (header size, header read
//! time, TLS handshake time), and upgrades allowed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::conn_workers::ConnWorkers;

/// Whether a request came in over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS.
    Https,
}

/// The client at the other end of a front-door connection.
#[derive(Debug)]
pub struct Client {
    /// How it connected.
    pub scheme: Scheme,
    /// Its IP address as a header value (for `X-Forwarded-For`), made once
    /// per connection rather than formatted per request.
    pub ip_header: HeaderValue,
}

impl Client {
    /// The client at `addr`, connected over `scheme`.
    pub fn new(addr: SocketAddr, scheme: Scheme) -> Self {
        let ip_header = HeaderValue::try_from(addr.ip().to_string())
            .expect("an IP address is a valid header value");
        Self { scheme, ip_header }
    }
}

/// Answers one request of a front-door connection from `Client`. The
/// front door has no routes (every request goes to the appspace its Host
/// names), so a plain function: a router would only add a lookup, boxed
/// services and request extensions, per request.
pub type Handler = Arc<
    dyn Fn(Request<Body>, Arc<Client>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>>
        + Send
        + Sync,
>;

/// Limits on what a client may make a connection hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time to send a complete request head.
    pub header_read_timeout: Duration,
    /// Largest request head (431 beyond). hyper checks it between reads,
    /// so a head that arrives in one large read may pass up to twice this.
    pub max_header_bytes: usize,
    /// Time to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// What an accept loop does after `accept` failed: a lack of descriptors
/// or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) would fail again at
/// once, so the loop waits 100 ms instead of spinning (the pending
/// connections wait in the backlog) and says so, at most once a second;
/// anything else (a connection reset before it was accepted) is retried
/// at once.
pub(crate) async fn after_accept_error(e: &std::io::Error, what: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_WARNING_SECS: AtomicU64 = AtomicU64::new(0);
    use rustix::io::Errno;
    let exhausted = matches!(
        Errno::from_io_error(e),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    );
    if !exhausted {
        debug!(error = %e, "{what}: accept failed");
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_WARNING_SECS.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(error = %e, "{what}: cannot accept connections; backing off");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Accepts connections until `shutdown` resolves and serves each on one
/// of `workers`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
    limits: ConnLimits,
    workers: Arc<ConnWorkers>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tokio::select! {
                        () = after_accept_error(&e, "front door") => continue,
                        () = &mut shutdown => return,
                    }
                }
            },
            () = &mut shutdown => return,
        };
        // Responses are written whole; Nagle would only delay them.
        let _ = tcp.set_nodelay(true);
        let handler = handler.clone();
        let acceptor = acceptor.clone();
        workers.dispatch(tcp, move |tcp| async move {
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(tls)) => serve_conn(tls, peer, Scheme::Https, handler, limits).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => serve_conn(tcp, peer, Scheme::Http, handler, limits).await,
            }
        });
    }
}

async fn serve_conn<S>(
    stream: S,
    peer: SocketAddr,
    scheme: Scheme,
    handler: Handler,
    limits: ConnLimits,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let client = Arc::new(Client::new(peer, scheme));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let answer = handler(req.map(Body::new), client.clone());
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(e) = result {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}
