//! Keep-alive HTTP/1.1 connections to one appspace's app, reused across
//! requests as nginx's upstream `keepalive` does.
//!
//! Why our own and not hyper-util's pooled client: that client keys its
//! pool by URI (so every request needs an absolute-form URI built, parsed
//! and hashed) and spawns a task per request to wait for the connection to
//! become reusable. Here the pool belongs to the appspace, a connection
//! goes back when the response body's last byte has been read (the body
//! holds it until then), and the next request waits for hyper to say it is
//! ready. hyper's `client::conn::http1` still does all of the HTTP.
//!
//! A connection's task runs on the thread that made it, and a request only
//! takes an idle connection made on its own thread (see
//! [`super::conn_workers`]): nothing crosses threads, as between nginx's
//! workers. So the idle connections live in a thread-local table, keyed
//! by pool: a warm request takes no lock, shared or not. Borrowing another thread's idle connection when this thread
//! had none cost two cross-thread wake-ups per request (an `eventfd` write
//! each way) and, since a borrowed connection went back to its own
//! thread, the imbalance never settled: under load ~0.4 wake-ups per
//! request, and ds-host spent ~1.5x nginx's CPU per request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::app_link::Upstream;

/// Idle connections kept per appspace and thread.
const MAX_IDLE_PER_THREAD: usize = 64;
/// An idle connection unused this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a returned connection may take to become reusable before a
/// fresh one is opened instead (normally the next turn of its task).
const READY_WAIT: Duration = Duration::from_millis(250);

/// A request sent on a connection idle this long is copied first if it is
/// safe to repeat ([`replay_copy`]): apps close idle keep-alive
/// connections after a few seconds (Node 5 s, gunicorn 2 s), and a request
/// that crosses the close on the wire would otherwise fail with a 502.
const REPLAY_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A copy of `req` to send again if the connection it goes out on turns out
/// to have been closed by the app meanwhile (nginx retries on another
/// connection alike), when it is safe to repeat: an idempotent method
/// (RFC 9110, 9.2.2) and no body (a body cannot be replayed).
fn replay_copy(req: &Request<Body>) -> Option<Request<Body>> {
    use hyper::body::Body as _;
    use hyper::Method;
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    if !idempotent || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(Body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Why a request could not be sent to the app.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection to the app could be made.
    #[error("connecting to the app: {0}")]
    Connect(#[from] std::io::Error),
    /// The HTTP/1.1 handshake on a new connection failed.
    #[error("talking to the app: {0}")]
    Handshake(hyper::Error),
    /// The app did not answer.
    #[error("{0}")]
    Request(hyper::Error),
}

/// One appspace's idle connections: on each thread, those made there
/// (most recently used last).
#[derive(Debug)]
pub struct UpstreamPool {
    /// Its key in every thread's table.
    id: u64,
}

impl Default for UpstreamPool {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self {
            id: NEXT.fetch_add(1, AtomicOrdering::Relaxed),
        }
    }
}

thread_local! {
    /// This thread's idle connections, by pool.
    static IDLE: RefCell<HashMap<u64, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// A connection waiting for its next request.
#[derive(Debug)]
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
    /// The link (one run of the sandbox) it was made through.
    link: u64,
}

impl Idle {
    fn usable(&self, link: u64, now: Instant) -> bool {
        self.link == link
            && !self.sender.is_closed()
            && now.saturating_duration_since(self.since) < IDLE_TIMEOUT
    }
}

impl UpstreamPool {
    /// Sends `req` to the app on an idle connection made through `link`
    /// (the sandbox's current run, [`crate::app_link::AppLink::id`]), or
    /// on a new one made by `connect` (normally
    /// [`crate::app_link::AppLink::connect`]). A request that a stale idle
    /// connection could not take (the app had just closed it) is sent
    /// again on a new one; so is a request that crossed the app's close of
    /// a connection that had sat idle, when it is safe to repeat
    /// ([`replay_copy`]).
    pub async fn send<F, Fut>(
        self: &Arc<Self>,
        link: u64,
        connect: F,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Upstream, std::io::Error>>,
    {
        let mut req = req;
        // Connections taken or made here run their task on this thread.
        while let Some((mut sender, idle_for)) = self.take_idle(link) {
            if !sender.is_ready()
                && !matches!(
                    tokio::time::timeout(READY_WAIT, sender.ready()).await,
                    Ok(Ok(()))
                )
            {
                continue;
            }
            // Copying costs allocations, so only where an app's keep-alive
            // timeout can have struck: not on connections busy under load.
            let replay = (idle_for >= REPLAY_AFTER_IDLE)
                .then(|| replay_copy(&req))
                .flatten();
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.lease(sender, link))),
                Err(mut e) => match (e.take_message(), replay) {
                    // Not sent: the connection had closed under us.
                    (Some(unsent), _) => {
                        debug!(error = %e.error(), "idle connection to the app was closed");
                        req = unsent;
                    }
                    // Sent as the app closed the connection: once more on a
                    // fresh one (the other idle ones are as old).
                    (None, Some(copy)) => {
                        debug!(error = %e.error(), "the app closed an idle connection as a request crossed it; sending it again");
                        req = copy;
                        break;
                    }
                    (None, None) => return Err(UpstreamError::Request(e.into_error())),
                },
            }
        }
        let mut sender = Self::handshake(connect().await?).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Request)?;
        Ok((resp, self.lease(sender, link)))
    }

    /// HTTP/1.1 on a new connection to the app, its task running (on this
    /// thread when the runtime is a worker's).
    async fn handshake(conn: Upstream) -> Result<SendRequest<Body>, UpstreamError> {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "connection to the app ended");
            }
        });
        Ok(sender)
    }

    /// The most recently used idle connection through `link` made on this
    /// thread that is still open; drops closed, expired and older runs'
    /// ones on the way. Also says how long it sat idle.
    fn take_idle(&self, link: u64) -> Option<(SendRequest<Body>, Duration)> {
        let now = Instant::now();
        IDLE.with(|table| {
            let mut table = table.borrow_mut();
            let idle = table.get_mut(&self.id)?;
            while let Some(entry) = idle.pop() {
                if entry.usable(link, now) {
                    return Some((entry.sender, now.saturating_duration_since(entry.since)));
                }
            }
            None
        })
    }

    fn lease(self: &Arc<Self>, sender: SendRequest<Body>, link: u64) -> Lease {
        Lease {
            pool: self.clone(),
            sender: Some(sender),
            link,
            home: std::thread::current().id(),
        }
    }

    fn put_back(&self, sender: SendRequest<Body>, link: u64) {
        if sender.is_closed() {
            return;
        }
        IDLE.with(|table| {
            let mut table = table.borrow_mut();
            // One clock read for all of them: this runs once per request.
            let now = Instant::now();
            if !table.contains_key(&self.id) {
                // A pool new to this thread: forget pools whose connections
                // are all gone (appspaces stopped or deleted), so the table
                // holds only live ones.
                table.retain(|_, idle| {
                    idle.retain(|entry| entry.usable(entry.link, now));
                    !idle.is_empty()
                });
            }
            let idle = table.entry(self.id).or_default();
            // Unusable ones go first, and no thread keeps more than its cap
            // (its least recently used one goes).
            idle.retain(|entry| entry.usable(link, now));
            if idle.len() >= MAX_IDLE_PER_THREAD {
                idle.remove(0);
            }
            idle.push(Idle {
                sender,
                since: now,
                link,
            });
        });
    }

    /// Idle connections on this thread now.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        IDLE.with(|table| table.borrow().get(&self.id).map_or(0, Vec::len))
    }

    /// Idle connections on this thread that hyper has not yet seen closed.
    #[cfg(test)]
    fn idle_open(&self) -> usize {
        IDLE.with(|table| {
            table.borrow().get(&self.id).map_or(0, |idle| {
                idle.iter().filter(|e| !e.sender.is_closed()).count()
            })
        })
    }
}

/// A connection lent to one exchange: it goes back to the pool when the
/// response has been read to its end ([`Lease::finished`]), and is closed
/// if the exchange is dropped half-way (its state is then unknown).
#[derive(Debug)]
pub struct Lease {
    pool: Arc<UpstreamPool>,
    sender: Option<SendRequest<Body>>,
    link: u64,
    /// The thread the connection was made or taken on.
    home: std::thread::ThreadId,
}

impl Lease {
    /// The response has been read to its end: the connection may be reused
    /// (by this thread's requests; a body finished on another thread, which
    /// the workers never do, closes it instead).
    pub fn finished(&mut self) {
        if let Some(sender) = self.sender.take() {
            if std::thread::current().id() == self.home {
                self.pool.put_back(sender, self.link);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A mock app on a fresh port serving each connection with `serve`;
    /// returns its address and the connections it accepted so far.
    async fn mock_app<F, Fut>(serve: F) -> (std::net::SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(conn));
            }
        });
        (addr, accepted)
    }

    /// Reads up to the end of a request head; false if the client went.
    async fn read_head(conn: &mut TcpStream) -> bool {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }

    /// A keep-alive HTTP/1.1 server answering every GET with `body_len`
    /// bytes; it closes a connection after `per_conn` answers. Returns its
    /// address and the connections it accepted so far.
    async fn app(body_len: usize, per_conn: usize) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        mock_app(move |mut conn| async move {
            for _ in 0..per_conn {
                if !read_head(&mut conn).await {
                    return;
                }
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n");
                let body = vec![b'x'; body_len];
                if conn.write_all(head.as_bytes()).await.is_err()
                    || conn.write_all(&body).await.is_err()
                {
                    return;
                }
            }
        })
        .await
    }

    /// One GET through `pool` to `addr` as run `link`, its body read to the
    /// end and its connection given back as the proxy does.
    async fn get(pool: &Arc<UpstreamPool>, link: u64, addr: std::net::SocketAddr) -> usize {
        let req = Request::get("/").body(Body::empty()).unwrap();
        let connect = || async move { TcpStream::connect(addr).await };
        let (resp, mut lease) = pool.send(link, connect, req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        lease.finished();
        body.len()
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (addr, accepted) = app(5, usize::MAX).await;
        let pool = Arc::new(UpstreamPool::default());
        for _ in 0..5 {
            assert_eq!(get(&pool, 1, addr).await, 5);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    /// An app that answers the first request on each connection and closes
    /// the connection on reading the second, unanswered: a keep-alive
    /// timeout striking as a request arrives. Counts connections.
    async fn app_closing_on_second_request() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        mock_app(|mut conn| async move {
            if !read_head(&mut conn).await {
                return;
            }
            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
            if conn.write_all(answer).await.is_err() {
                return;
            }
            // The second request (head and body) is read, then the
            // connection closes without an answer.
            let _ = conn.read(&mut [0u8; 1024]).await;
        })
        .await
    }

    async fn send_to(
        pool: &Arc<UpstreamPool>,
        addr: std::net::SocketAddr,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let connect = || async move { TcpStream::connect(addr).await };
        pool.send(1, connect, req).await
    }

    #[tokio::test]
    async fn a_get_crossing_the_apps_close_of_an_idle_connection_is_sent_again() {
        let (addr, accepted) = app_closing_on_second_request().await;
        let pool = Arc::new(UpstreamPool::default());
        assert_eq!(get(&pool, 1, addr).await, 5);
        tokio::time::sleep(REPLAY_AFTER_IDLE + Duration::from_millis(100)).await;
        let req = Request::get("/again").body(Body::empty()).unwrap();
        let (resp, mut lease) = send_to(&pool, addr, req).await.expect("sent again");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        lease.finished();
        assert_eq!(&body[..], b"hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "one fresh connection");
    }

    #[tokio::test]
    async fn requests_unsafe_to_repeat_are_not_sent_again() {
        let (addr, accepted) = app_closing_on_second_request().await;
        let pool = Arc::new(UpstreamPool::default());
        // A POST is not idempotent; a PUT with a body cannot be replayed.
        let unsafe_ones = [
            Request::post("/").body(Body::empty()).unwrap(),
            Request::put("/").body(Body::from("data")).unwrap(),
        ];
        for req in unsafe_ones {
            let before = accepted.load(Ordering::SeqCst);
            assert_eq!(get(&pool, 1, addr).await, 5);
            tokio::time::sleep(REPLAY_AFTER_IDLE + Duration::from_millis(100)).await;
            let failed = send_to(&pool, addr, req).await;
            assert!(
                matches!(failed, Err(UpstreamError::Request(_))),
                "{failed:?}"
            );
            assert_eq!(accepted.load(Ordering::SeqCst), before + 1);
        }
    }

    #[tokio::test]
    async fn a_connection_the_app_closed_is_replaced() {
        let (addr, accepted) = app(5, 1).await;
        let pool = Arc::new(UpstreamPool::default());
        for _ in 0..3 {
            assert_eq!(get(&pool, 1, addr).await, 5);
            // Until the client has seen the close (as between two browser
            // requests): polled, not slept for.
            let deadline = Instant::now() + Duration::from_secs(2);
            while pool.idle_open() > 0 {
                assert!(Instant::now() < deadline, "the app's close was never seen");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_half_read_response_does_not_come_back() {
        let (addr, accepted) = app(4 << 20, usize::MAX).await;
        let pool = Arc::new(UpstreamPool::default());
        let req = Request::get("/").body(Body::empty()).unwrap();
        let connect = || async move { TcpStream::connect(addr).await };
        let (resp, lease) = pool.send(1, connect, req).await.unwrap();
        let mut body = resp.into_body();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        // The browser went away mid-body: its state is unknown.
        drop((body, lease));
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(get(&pool, 1, addr).await, 4 << 20);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// Connections stay with the thread (the runtime) that made them: a
    /// request on another thread opens its own instead of driving one
    /// whose task lives elsewhere, and each thread reuses its own.
    #[tokio::test]
    async fn threads_do_not_borrow_each_others_connections() {
        let (addr, accepted) = app(5, usize::MAX).await;
        let pool = Arc::new(UpstreamPool::default());
        get(&pool, 1, addr).await;
        let (done, keep_running) = tokio::sync::oneshot::channel::<()>();
        let (made, other_made) = std::sync::mpsc::channel();
        let other_pool = pool.clone();
        // Another connection worker: its runtime (and so its connection's
        // task) keeps running until the test ends.
        let other = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    get(&other_pool, 1, addr).await;
                    get(&other_pool, 1, addr).await;
                    made.send(()).unwrap();
                    let _ = keep_running.await;
                });
        });
        tokio::task::spawn_blocking(move || other_made.recv().unwrap())
            .await
            .unwrap();
        // Two connections, one idle on each thread (this thread sees its
        // own only).
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 1);
        get(&pool, 1, addr).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 1);
        drop(done);
        other.join().unwrap();
    }

    #[tokio::test]
    async fn a_new_run_of_the_sandbox_gets_new_connections() {
        let (addr, accepted) = app(5, usize::MAX).await;
        let pool = Arc::new(UpstreamPool::default());
        get(&pool, 1, addr).await;
        get(&pool, 2, addr).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // The first run's connection was dropped when the second came back.
        assert_eq!(pool.idle_count(), 1);
        get(&pool, 2, addr).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
