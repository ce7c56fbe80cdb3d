//! A running channel: the multiplexer driver and the API host and agent use.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use crate::control::{self, ControlMessage};
use crate::error::ProtoError;
use crate::frame_guard::FrameGuard;
use crate::handshake::{exchange_hello, Role};
use crate::socket::ChannelSocket;
use crate::stream::ProtoStream;
use crate::stream_header::{self, Destination, StreamKind};

/// yamux's initial (and minimum) per-stream receive window.
const STREAM_WINDOW: usize = 256 * 1024;

/// Tunables of a channel. The defaults suit one appspace.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long the peer has to send its hello.
    pub handshake_timeout: Duration,
    /// How long a newly opened stream has to send its opening bytes.
    pub stream_header_timeout: Duration,
    /// Most streams open at once (both directions together). Also bounds
    /// memory: each stream buffers at most its receive window, 256 KiB
    /// unless it grew out of `window_growth`, so one channel buffers at most
    /// `max_streams * 256 KiB + window_growth`.
    pub max_streams: usize,
    /// Receive-window credit, shared by all streams of a channel, out of
    /// which yamux doubles the window of a stream whose reader keeps up.
    /// Without it a bulk stream between two processes runs stop-and-wait:
    /// one 256 KiB window per wake-up round trip.
    pub window_growth: usize,
    /// Largest data frame this side sends (the peer accepts up to 1 MiB).
    /// Two frames per fresh 256 KiB window keep a stream flowing while the
    /// peer returns credit; fewer, larger frames cut yamux's per-frame
    /// allocation and copy (docs/protocol.md).
    pub max_send_frame: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            stream_header_timeout: Duration::from_secs(10),
            max_streams: 2048,
            window_growth: 16 * 1024 * 1024,
            max_send_frame: 128 * 1024,
        }
    }
}

impl Config {
    fn yamux(&self) -> yamux::Config {
        let mut cfg = yamux::Config::default();
        let streams = self.max_streams.max(1);
        // Order matters: yamux asserts window >= streams * 256 KiB on each
        // call. It grows windows only out of what exceeds that.
        let window = streams
            .saturating_mul(STREAM_WINDOW)
            .saturating_add(self.window_growth);
        cfg.set_max_connection_receive_window(Some(window));
        cfg.set_max_num_streams(streams);
        cfg.set_split_send_size(self.max_send_frame.clamp(1024, 1024 * 1024));
        cfg.set_read_after_close(true);
        cfg
    }
}

/// Whether the channel is still up, shared by the driver and every stream.
#[derive(Debug)]
pub(crate) struct Liveness {
    ended: watch::Sender<Option<Arc<str>>>,
}

impl Liveness {
    fn new() -> Self {
        Self {
            ended: watch::Sender::new(None),
        }
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.ended.borrow().is_some()
    }

    pub(crate) fn reason(&self) -> String {
        self.ended
            .borrow()
            .as_deref()
            .unwrap_or("channel is up")
            .to_owned()
    }

    /// Rewrites a stream I/O error so that it names the channel's fate.
    pub(crate) fn explain(&self, e: io::Error) -> io::Error {
        match self.ended.borrow().as_deref() {
            Some(reason) => {
                io::Error::new(io::ErrorKind::BrokenPipe, format!("channel lost: {reason}"))
            }
            None => e,
        }
    }

    /// Records why the channel ended; the first reason wins.
    fn end(&self, reason: &str) {
        self.ended.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some(reason.into());
                true
            } else {
                false
            }
        });
    }
}

/// A stream the peer opened, already classified.
#[derive(Debug)]
pub enum Incoming {
    /// Agent side: an inbound HTTP/1.1 exchange to splice to the app.
    Http(ProtoStream),
    /// Host side: the agent asks to reach `destination`.
    Egress(EgressRequest),
}

/// An egress stream awaiting the host's verdict. Dropping it resets the
/// stream, which the agent sees as an error.
#[derive(Debug)]
pub struct EgressRequest {
    destination: Destination,
    stream: yamux::Stream,
    liveness: Arc<Liveness>,
}

impl EgressRequest {
    /// Where the agent wants to go.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// Accepts: the agent is told so and the stream carries the connection.
    pub async fn accept(mut self) -> Result<ProtoStream, ProtoError> {
        stream_header::write_verdict(&mut self.stream, Ok(None)).await?;
        Ok(ProtoStream::new(self.stream, self.liveness))
    }

    /// Accepts, with the connection itself handed to the agent out of band
    /// (its socket sent on the handoff socket under `token` before this is
    /// called). The stream returned is the lifeline: the agent writes the
    /// bytes it moved (two big-endian u64, out then in) and closes it when
    /// the connection is done. See [`ProtoStream::handoff_token`].
    pub async fn hand_off(mut self, token: u64) -> Result<ProtoStream, ProtoError> {
        stream_header::write_verdict(&mut self.stream, Ok(Some(token))).await?;
        Ok(ProtoStream::new(self.stream, self.liveness).with_handoff(token))
    }

    /// Denies with a reason the agent can show the app (truncated to
    /// [`crate::MAX_REASON_LEN`] bytes), then closes the stream.
    pub async fn deny(mut self, reason: &str) -> Result<(), ProtoError> {
        stream_header::write_verdict(&mut self.stream, Err(reason)).await?;
        self.stream.close().await?;
        Ok(())
    }
}

type OpenReply = oneshot::Sender<Result<yamux::Stream, ProtoError>>;

/// The cloneable half of a session: open streams, send control messages,
/// ping, close, and learn when the channel ended.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    role: Role,
    opener: mpsc::Sender<OpenReply>,
    control_out: mpsc::Sender<ControlMessage>,
    pings: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>,
    next_nonce: Arc<AtomicU64>,
    liveness: Arc<Liveness>,
    shutdown: mpsc::UnboundedSender<String>,
    header_timeout: Duration,
}

/// One end of a ds-proto channel. Owns the receiving side (incoming streams
/// and control messages); [`Session::handle`] gives the sending side.
#[derive(Debug)]
pub struct Session {
    handle: SessionHandle,
    // Behind async locks so that `accept` and `recv_control` can be awaited
    // concurrently (e.g. in one `select!`).
    incoming: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
    control_in: tokio::sync::Mutex<mpsc::Receiver<ControlMessage>>,
}

impl Session {
    /// Runs the handshake on a connected Unix stream socket and starts the
    /// channel. Must be called inside a tokio runtime.
    pub async fn connect(
        socket: UnixStream,
        role: Role,
        config: Config,
    ) -> Result<Self, ProtoError> {
        Self::over(ChannelSocket::new(socket)?, role, config).await
    }

    /// Like [`Session::connect`], over any byte transport (tests, fuzzing).
    pub async fn over<T>(mut io: T, role: Role, config: Config) -> Result<Self, ProtoError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        exchange_hello(&mut io, role, config.handshake_timeout).await?;
        let mode = match role {
            Role::Host => yamux::Mode::Client,
            Role::Agent => yamux::Mode::Server,
        };
        let (shutdown, shutdown_rx) = mpsc::unbounded_channel();
        let conn =
            yamux::Connection::new(FrameGuard::new(io, shutdown.clone()), config.yamux(), mode);

        let liveness = Arc::new(Liveness::new());
        let (opener, open_rx) = mpsc::channel::<OpenReply>(64);
        let (incoming_tx, incoming) = mpsc::channel(256);
        let (control_out, control_out_rx) = mpsc::channel(64);
        let (control_in_tx, control_in) = mpsc::channel(64);
        let handle = SessionHandle {
            role,
            opener,
            control_out,
            pings: Arc::default(),
            next_nonce: Arc::default(),
            liveness: liveness.clone(),
            shutdown,
            header_timeout: config.stream_header_timeout,
        };
        let control = ControlPlumbing {
            outgoing: Mutex::new(Some(control_out_rx)),
            incoming: control_in_tx,
            handle: handle.downgrade_for_tasks(),
        };
        let router = Arc::new(Router {
            role,
            incoming: incoming_tx,
            control,
            liveness: liveness.clone(),
            header_timeout: config.stream_header_timeout,
        });
        tokio::spawn(drive(conn, open_rx, shutdown_rx, router.clone(), liveness));

        if role == Role::Host {
            // The host opens the control stream first, so the agent knows it.
            let open_control = async {
                let mut stream = handle.open_raw().await?;
                stream
                    .write_all(&stream_header::encode_opening(&StreamKind::Control))
                    .await?;
                stream.flush().await?;
                router.control.attach(stream)
            };
            // If the peer broke the channel meanwhile, say why rather than
            // "connection closed".
            open_control.await.map_err(|e| {
                if handle.is_closed() {
                    handle.end_error()
                } else {
                    e
                }
            })?;
        }
        Ok(Self {
            handle,
            incoming: tokio::sync::Mutex::new(incoming),
            control_in: tokio::sync::Mutex::new(control_in),
        })
    }

    /// The sending half, cloneable across tasks.
    pub fn handle(&self) -> SessionHandle {
        self.handle.clone()
    }

    /// The next stream the peer opened. Fails once the channel has ended,
    /// naming why.
    pub async fn accept(&self) -> Result<Incoming, ProtoError> {
        match self.incoming.lock().await.recv().await {
            Some(incoming) => Ok(incoming),
            None => Err(self.handle.end_error()),
        }
    }

    /// The next control message from the peer (pings are answered
    /// internally and never show up here).
    pub async fn recv_control(&self) -> Result<ControlMessage, ProtoError> {
        match self.control_in.lock().await.recv().await {
            Some(msg) => Ok(msg),
            None => Err(self.handle.end_error()),
        }
    }
}

impl SessionHandle {
    /// What tasks of the session itself keep: everything but the opener, so
    /// that the channel closes once the user drops every handle.
    fn downgrade_for_tasks(&self) -> TaskHandle {
        TaskHandle {
            control_out: self.control_out.clone(),
            pings: self.pings.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    fn end_error(&self) -> ProtoError {
        ProtoError::closed(self.liveness.reason())
    }

    async fn open_raw(&self) -> Result<yamux::Stream, ProtoError> {
        let (reply, rx) = oneshot::channel();
        self.opener
            .send(reply)
            .await
            .map_err(|_| self.end_error())?;
        rx.await.map_err(|_| self.end_error())?
    }

    async fn open_kind(&self, kind: &StreamKind) -> Result<yamux::Stream, ProtoError> {
        let mut stream = self.open_raw().await?;
        stream
            .write_all(&stream_header::encode_opening(kind))
            .await?;
        Ok(stream)
    }

    /// Host side: opens a stream for one inbound HTTP exchange.
    pub async fn open_http(&self) -> Result<ProtoStream, ProtoError> {
        if self.role != Role::Host {
            return Err(ProtoError::Violation(
                "only the host opens inbound-HTTP streams".into(),
            ));
        }
        let stream = self.open_kind(&StreamKind::Http).await?;
        Ok(ProtoStream::new(stream, self.liveness.clone()))
    }

    /// Agent side: asks the host for a connection to `destination`.
    /// `Ok(Err(reason))` is the host's denial.
    pub async fn open_egress(
        &self,
        destination: Destination,
    ) -> Result<Result<ProtoStream, String>, ProtoError> {
        if self.role != Role::Agent {
            return Err(ProtoError::Violation(
                "only the agent opens egress streams".into(),
            ));
        }
        let mut stream = self.open_kind(&StreamKind::Egress(destination)).await?;
        stream.flush().await?;
        let verdict = tokio::time::timeout(
            self.header_timeout,
            stream_header::read_verdict(&mut stream),
        )
        .await
        .map_err(|_| {
            ProtoError::BadStreamHeader("host did not answer the egress request in time".into())
        })??;
        Ok(verdict.map(|handoff| {
            let stream = ProtoStream::new(stream, self.liveness.clone());
            match handoff {
                Some(token) => stream.with_handoff(token),
                None => stream,
            }
        }))
    }

    /// Sends a control message to the peer.
    pub async fn send_control(&self, msg: ControlMessage) -> Result<(), ProtoError> {
        self.control_out
            .send(msg)
            .await
            .map_err(|_| self.end_error())
    }

    /// Measures one control-stream round trip.
    pub async fn ping(&self) -> Result<Duration, ProtoError> {
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pings).insert(nonce, tx);
        let start = Instant::now();
        self.send_control(ControlMessage::Ping { nonce }).await?;
        let mut ended = self.liveness.ended.subscribe();
        tokio::select! {
            pong = rx => pong.map_err(|_| self.end_error())?,
            _ = ended.wait_for(Option::is_some) => {
                lock(&self.pings).remove(&nonce);
                return Err(self.end_error());
            }
        }
        Ok(start.elapsed())
    }

    /// Closes the channel at once: every open stream on both sides fails
    /// with a "channel lost" error and the peer's session ends.
    pub fn close(&self) {
        let _ = self.shutdown.send(String::new());
    }

    /// Resolves when the channel has ended, with the reason.
    pub async fn closed(&self) -> String {
        let mut ended = self.liveness.ended.subscribe();
        // The sender lives in `self.liveness`, so waiting cannot fail.
        let _ = ended.wait_for(Option::is_some).await;
        self.liveness.reason()
    }

    /// Whether the channel has ended.
    pub fn is_closed(&self) -> bool {
        self.liveness.is_lost()
    }
}

/// The parts of a handle the session's own tasks keep.
#[derive(Debug, Clone)]
struct TaskHandle {
    control_out: mpsc::Sender<ControlMessage>,
    pings: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>,
    shutdown: mpsc::UnboundedSender<String>,
}

impl TaskHandle {
    fn fail(&self, why: impl std::fmt::Display) {
        let _ = self.shutdown.send(format!("protocol error: {why}"));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Wires the control stream to the session's channels once it exists.
#[derive(Debug)]
struct ControlPlumbing {
    outgoing: Mutex<Option<mpsc::Receiver<ControlMessage>>>,
    incoming: mpsc::Sender<ControlMessage>,
    handle: TaskHandle,
}

impl ControlPlumbing {
    fn attach(&self, stream: yamux::Stream) -> Result<(), ProtoError> {
        let Some(mut outgoing) = lock(&self.outgoing).take() else {
            return Err(ProtoError::Violation(
                "a second control stream was opened".into(),
            ));
        };
        let (mut reader, mut writer) = stream.split();
        let handle = self.handle.clone();
        tokio::spawn(async move {
            while let Some(msg) = outgoing.recv().await {
                if let Err(e) = control::write(&mut writer, &msg).await {
                    handle.fail(format_args!("writing control message: {e}"));
                    return;
                }
            }
        });
        let handle = self.handle.clone();
        let incoming = self.incoming.clone();
        tokio::spawn(async move {
            loop {
                match control::read(&mut reader).await {
                    Ok(Some(ControlMessage::Ping { nonce })) => {
                        if handle
                            .control_out
                            .send(ControlMessage::Pong { nonce })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(Some(ControlMessage::Pong { nonce })) => {
                        if let Some(waiter) = lock(&handle.pings).remove(&nonce) {
                            let _ = waiter.send(());
                        }
                    }
                    Ok(Some(msg)) => {
                        // A full queue means the user is not reading; waiting here
                        // stops reading the control stream, which yamux turns into
                        // back-pressure on the peer.
                        if incoming.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        handle.fail("peer closed the control stream");
                        return;
                    }
                    Err(e) => {
                        handle.fail(format_args!("control stream: {e}"));
                        return;
                    }
                }
            }
        });
        Ok(())
    }
}

/// Classifies streams the peer opens and routes them.
#[derive(Debug)]
struct Router {
    role: Role,
    incoming: mpsc::Sender<Incoming>,
    control: ControlPlumbing,
    liveness: Arc<Liveness>,
    header_timeout: Duration,
}

impl Router {
    async fn route(&self, mut stream: yamux::Stream) -> Result<(), ProtoError> {
        let kind = tokio::time::timeout(
            self.header_timeout,
            stream_header::read_opening(&mut stream),
        )
        .await
        .map_err(|_| ProtoError::BadStreamHeader("no stream header within the timeout".into()))??;
        let incoming = match (self.role, kind) {
            (Role::Agent, StreamKind::Control) => return self.control.attach(stream),
            (Role::Agent, StreamKind::Http) => {
                Incoming::Http(ProtoStream::new(stream, self.liveness.clone()))
            }
            (Role::Host, StreamKind::Egress(destination)) => Incoming::Egress(EgressRequest {
                destination,
                stream,
                liveness: self.liveness.clone(),
            }),
            (role, kind) => {
                return Err(ProtoError::Violation(format!(
                    "{:?} opened a {kind:?} stream, which only {role:?}'s peer may not",
                    role.peer()
                )))
            }
        };
        // If nobody accepts, the stream is dropped (reset); that is fine.
        let _ = self.incoming.send(incoming).await;
        Ok(())
    }
}

/// Owns the multiplexer: opens streams on request, hands inbound ones to
/// the router, and ends the channel on the first error or close request.
async fn drive<T>(
    mut conn: yamux::Connection<T>,
    mut open_rx: mpsc::Receiver<OpenReply>,
    mut shutdown_rx: mpsc::UnboundedReceiver<String>,
    router: Arc<Router>,
    liveness: Arc<Liveness>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    enum Exit {
        Local(String),
        Failed(ProtoError),
        PeerClosed,
        /// The peer's socket closed with our bytes unread: how a peer that
        /// exits (an agent whose app was stopped) usually goes.
        PeerReset,
    }
    /// Ends the channel if the driver unwinds (a multiplexer bug), so that
    /// streams and callers see an error instead of waiting forever.
    struct EndOnUnwind(Arc<Liveness>);
    impl Drop for EndOnUnwind {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.end("multiplexer failed internally");
            }
        }
    }
    let _unwind = EndOnUnwind(liveness.clone());
    let mut waiting: Option<OpenReply> = None;
    let mut handles_gone = false;
    let exit = poll_fn(|cx| {
        if let Poll::Ready(why) = shutdown_rx.poll_recv(cx) {
            return Poll::Ready(Exit::Local(why.unwrap_or_default()));
        }
        // Serve open requests one at a time, in order.
        loop {
            if waiting.is_none() && !handles_gone {
                match open_rx.poll_recv(cx) {
                    Poll::Ready(Some(reply)) => waiting = Some(reply),
                    Poll::Ready(None) => handles_gone = true,
                    Poll::Pending => {}
                }
            }
            let Some(reply) = waiting.take() else { break };
            match conn.poll_new_outbound(cx) {
                Poll::Ready(result) => {
                    let _ = reply.send(result.map_err(ProtoError::from));
                }
                Poll::Pending => {
                    waiting = Some(reply);
                    break;
                }
            }
        }
        if handles_gone && waiting.is_none() {
            return Poll::Ready(Exit::Local(String::new()));
        }
        loop {
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    let router = router.clone();
                    tokio::spawn(async move {
                        if let Err(e) = router.route(stream).await {
                            router.control.handle.fail(e);
                        }
                    });
                }
                Poll::Ready(Some(Err(e))) if is_reset(&e) => return Poll::Ready(Exit::PeerReset),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Exit::Failed(e.into())),
                Poll::Ready(None) => return Poll::Ready(Exit::PeerClosed),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;

    let (reason, clean) = match exit {
        Exit::Local(why) if why.is_empty() => ("closed locally".to_owned(), true),
        Exit::Local(why) => (why, false),
        Exit::Failed(e) => (e.to_string(), false),
        Exit::PeerClosed => ("closed by the peer".to_owned(), true),
        Exit::PeerReset => ("reset by the peer".to_owned(), true),
    };
    // Mark the channel dead before streams observe the teardown, so they
    // report a loss rather than a clean end.
    liveness.end(&reason);
    if clean {
        debug!(%reason, "ds-proto channel closed");
    } else {
        warn!(%reason, "ds-proto channel failed");
    }
    // No graceful GoAway: yamux's close path leaves local streams un-woken,
    // while dropping an active connection marks every stream closed and
    // wakes its readers and writers. The peer sees the socket close.
    drop(conn);
    if let Some(reply) = waiting {
        let _ = reply.send(Err(ProtoError::closed(reason.clone())));
    }
}

/// Whether the multiplexer failed only because the peer's socket went away
/// (closed with data unread), rather than on bad input.
fn is_reset(e: &yamux::ConnectionError) -> bool {
    let io = match e {
        yamux::ConnectionError::Io(io) => io,
        yamux::ConnectionError::Decode(yamux::FrameDecodeError::Io(io)) => io,
        _ => return false,
    };
    io.kind() == io::ErrorKind::ConnectionReset
}
