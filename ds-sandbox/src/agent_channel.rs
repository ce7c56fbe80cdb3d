//! The agent's side of the host channel: once the app runs, the agent
//! speaks ds-proto on the channel socket. It reports `ready` when the app
//! accepts connections on `$PORT`, splices every inbound HTTP stream to a
//! fresh connection to the app, answers stats requests, stops the app on
//! request, reaps children and forwards signals, and exits with the app's
//! status. It runs a single-threaded runtime (the agent's only other thread
//! is the seccomp listener).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::seccomp_notify::Denials;
use ds_proto::{AgentStats, Config, ControlMessage, Incoming, ProtoStream, Role, Session};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::egress_proxy;
use crate::supervise::{self, Exit, Supervisor};

/// How often the agent probes `$PORT` until the app listens: often at
/// first (cold start is on a user's request path, and a refused loopback
/// connect costs microseconds), then less for apps that start slowly.
const READY_POLL_FAST: Duration = Duration::from_micros(250);
const READY_POLL_SLOW: Duration = Duration::from_millis(5);
/// How long the fast probing lasts.
const READY_FAST_FOR: Duration = Duration::from_millis(300);
/// A probe that gets no answer this fast (a full backlog) is tried again.
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);

/// Counters reported in `stats`.
#[derive(Debug, Default)]
struct Counters {
    open: AtomicU64,
    total: AtomicU64,
    egress: Arc<AtomicU64>,
}

/// The pause before the next readiness probe, `since` probing began.
fn probe_pause(since: Duration) -> Duration {
    if since < READY_FAST_FOR {
        READY_POLL_FAST
    } else {
        READY_POLL_SLOW
    }
}

/// Resolves once something accepts connections on `addr`. The probes run
/// on a thread of their own: tokio's timer cannot sleep less than a
/// millisecond, which a cold start would pay one to two times over. If
/// that thread cannot be had (the pids limit), tokio probes instead.
async fn listening(addr: SocketAddr) {
    let (found, found_rx) = tokio::sync::oneshot::channel();
    let probe = std::thread::Builder::new()
        .name("ready-probe".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            while std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_err() {
                if found.is_closed() {
                    return; // nobody waits any more
                }
                std::thread::sleep(probe_pause(started.elapsed()));
            }
            let _ = found.send(());
        });
    if probe.is_ok() && found_rx.await.is_ok() {
        return;
    }
    let started = tokio::time::Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        tokio::time::sleep(probe_pause(started.elapsed())).await;
    }
}

/// Serves the channel until the app exits; returns the app's exit.
/// `proxy` is the egress proxy's listener, bound before the app started
/// so that its first request finds it.
pub fn serve(
    channel: UnixStream,
    app: i32,
    app_port: u16,
    proxy: std::net::TcpListener,
    handoff: Option<std::os::fd::OwnedFd>,
    supervisor: Supervisor,
    denials: Denials,
) -> std::io::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(
        channel,
        Pid::from_raw(app),
        app_port,
        proxy,
        handoff,
        supervisor,
        denials,
    ))
}

async fn run(
    channel: UnixStream,
    app: Pid,
    app_port: u16,
    proxy: std::net::TcpListener,
    handoff: Option<std::os::fd::OwnedFd>,
    supervisor: Supervisor,
    denials: Denials,
) -> std::io::Result<Exit> {
    let mut signals = crate::sys::async_signal_fd(supervisor.into_signal_fd()?)?;
    let session = Session::connect(channel, Role::Agent, Config::default())
        .await
        .map_err(std::io::Error::other)?;
    let handle = session.handle();
    let counters = Arc::new(Counters::default());
    proxy.set_nonblocking(true)?;
    let handoff = handoff.map(ds_proto::Handoff::start_agent).transpose()?;
    let app_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, app_port));
    // The front door's requests for connections to the app, on the
    // handoff socket: each one answered there.
    let handoff = handoff.map(|(handoff, mut requests)| {
        let answering = handoff.clone();
        tokio::spawn(async move {
            while let Some(token) = requests.recv().await {
                tokio::spawn(hand_app_connection_over(answering.clone(), token, app_addr));
            }
        });
        handoff
    });
    tokio::spawn(egress_proxy::serve(
        tokio::net::TcpListener::from_std(proxy)?,
        handle.clone(),
        handoff.clone(),
        counters.egress.clone(),
    ));

    let ready = {
        let handle = handle.clone();
        async move {
            listening(app_addr).await;
            let _ = handle
                .send_control(ControlMessage::Ready { app_port })
                .await;
            std::future::pending::<()>().await
        }
    };
    tokio::pin!(ready);

    loop {
        tokio::select! {
            () = &mut ready => {}
            incoming = session.accept() => match incoming {
                Ok(Incoming::Http(stream)) => {
                    counters.open.fetch_add(1, Ordering::Relaxed);
                    counters.total.fetch_add(1, Ordering::Relaxed);
                    let counters = counters.clone();
                    tokio::spawn(async move {
                        splice_to_app(stream, app_addr).await;
                        counters.open.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                // The host never sends egress openings to the agent; ds-proto
                // already refuses them. Anything else: the host is gone.
                Ok(Incoming::Egress(_)) => {}
                Err(_) => return stop_app_for_good(app, &mut signals).await,
            },
            msg = session.recv_control() => match msg {
                Ok(ControlMessage::StatsRequest) => {
                    let stats = AgentStats {
                        http_streams_open: counters.open.load(Ordering::Relaxed),
                        http_streams_total: counters.total.load(Ordering::Relaxed),
                        egress_streams_total: counters.egress.load(Ordering::Relaxed),
                        app_starts: 1,
                        seccomp_denials: denials.total(),
                    };
                    let _ = handle.send_control(ControlMessage::Stats(stats)).await;
                }
                Ok(ControlMessage::Stop { grace_ms }) => {
                    let _ = kill(app, Signal::SIGTERM);
                    let grace = Duration::from_millis(grace_ms);
                    tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        let _ = kill(app, Signal::SIGKILL);
                    });
                }
                Ok(_) => {}
                Err(_) => return stop_app_for_good(app, &mut signals).await,
            },
            guard = signals.readable_mut() => {
                let mut guard = guard?;
                if let Some(exit) = handle_signals(guard.get_inner_mut(), app)? {
                    return Ok(exit);
                }
                guard.clear_ready();
            }
        }
    }
}

/// Drains the signalfd: forwards signals to the app and reaps children.
fn handle_signals(
    fd: &mut nix::sys::signalfd::SignalFd,
    app: Pid,
) -> std::io::Result<Option<Exit>> {
    while let Some(info) = fd.read_signal()? {
        supervise::forward(app, info.ssi_signo as i32);
    }
    supervise::reap(app, true)
}

/// The host is gone: nothing may keep running. Kill the app and wait.
async fn stop_app_for_good(
    app: Pid,
    signals: &mut tokio::io::unix::AsyncFd<nix::sys::signalfd::SignalFd>,
) -> std::io::Result<Exit> {
    let _ = kill(app, Signal::SIGKILL);
    loop {
        let mut guard = signals.readable_mut().await?;
        if let Some(exit) = handle_signals(guard.get_inner_mut(), app)? {
            return Ok(exit);
        }
        guard.clear_ready();
    }
}

/// Connects to the app and sends the connection to the front door under
/// `token`: it then speaks HTTP to the app itself, and the agent is out
/// of the data path. On failure the token goes back alone (a refusal), so
/// the front door answers at once.
async fn hand_app_connection_over(handoff: Arc<ds_proto::Handoff>, token: u64, app: SocketAddr) {
    let Ok(conn) = TcpStream::connect(app).await else {
        let _ = handoff.send_token(token).await;
        return;
    };
    // Small writes (HTTP heads) must not wait for Nagle.
    let _ = conn.set_nodelay(true);
    let _ = handoff.send(token, conn.as_fd()).await;
}

/// Copies one inbound stream to a new connection to the app and back,
/// passing half-closes through in both directions.
async fn splice_to_app(mut stream: ProtoStream, app: SocketAddr) {
    match TcpStream::connect(app).await {
        Ok(mut conn) => {
            // Small writes (HTTP heads) must not wait for Nagle.
            let _ = conn.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut conn).await;
            let _ = stream.shutdown().await;
        }
        Err(_) => {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            let _ = stream.shutdown().await;
        }
    }
}
