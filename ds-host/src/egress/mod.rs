//! Egress: the host's side of the app's only way out. Each egress stream
//! the agent opens is checked against the appspace's allowlist
//! ([`rules`]), limited per appspace (concurrent connections and a rate),
//! connected to the address that was checked, spliced, and recorded.

pub mod in_flight;
pub mod log_writer;
pub mod resolver;
pub mod rules;

use std::num::NonZeroU32;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ds_proto::EgressRequest;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tracing::{info_span, warn, Instrument};

use crate::appspace::applog::AppLog;
use in_flight::InFlight;
use rules::{Rule, Verdict};

/// Per-appspace egress limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EgressLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// New connections per second, sustained.
    pub per_second: NonZeroU32,
    /// New connections in a burst.
    pub burst: NonZeroU32,
    /// Time to resolve and connect.
    pub connect_timeout: Duration,
}

impl Default for EgressLimits {
    fn default() -> Self {
        Self {
            max_connections: 32,
            per_second: NonZeroU32::new(20).expect("non-zero"),
            burst: NonZeroU32::new(40).expect("non-zero"),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Connected and spliced until either side closed.
    Allowed,
    /// Refused by the allowlist or a limit.
    Denied,
    /// Allowed, but the connection could not be made.
    Failed,
}

impl Outcome {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }
}

/// One attempt, for the egress log.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressEvent {
    /// The appspace.
    pub appspace: String,
    /// What the app asked for (`host:port`).
    pub destination: String,
    /// The address connected to, when one was.
    pub address: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was denied or failed.
    pub reason: String,
    /// Bytes from the app out.
    pub bytes_up: u64,
    /// Bytes back to the app.
    pub bytes_down: u64,
    /// From request to close.
    pub duration: Duration,
}

/// Where events go (a task writes them to the database).
pub type EgressSink = mpsc::Sender<EgressEvent>;

/// One appspace's egress policy and limits; lives as long as the
/// appspace, across sandbox restarts.
pub struct EgressGate {
    appspace: String,
    rules: std::sync::RwLock<Vec<Rule>>,
    open: Arc<Semaphore>,
    rate: DefaultDirectRateLimiter,
    limits: EgressLimits,
    next_token: AtomicU64,
    /// Attempts not yet handed to the egress log.
    in_flight: InFlight,
}

impl std::fmt::Debug for EgressGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressGate")
            .field("appspace", &self.appspace)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl EgressGate {
    /// A gate for `appspace` with `rules`.
    pub fn new(appspace: &str, rules: Vec<Rule>, limits: EgressLimits) -> Self {
        Self {
            appspace: appspace.to_owned(),
            rules: std::sync::RwLock::new(rules),
            open: Arc::new(Semaphore::new(limits.max_connections)),
            rate: RateLimiter::direct(
                Quota::per_second(limits.per_second).allow_burst(limits.burst),
            ),
            limits,
            next_token: AtomicU64::new(1),
            in_flight: InFlight::default(),
        }
    }

    /// Waits (at most `within`) until every attempt under way has been
    /// handed to the egress log: a stopping host calls it after stopping
    /// the appspace, whose last connections end with the stop.
    pub async fn settled(&self, within: Duration) -> bool {
        self.in_flight.settled(within).await
    }

    /// Replaces the allowlist (new connections see it at once).
    pub fn set_rules(&self, rules: Vec<Rule>) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    /// The allowlist now.
    pub fn rules(&self) -> Vec<Rule> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Decides on, connects and splices one egress stream; records it in
    /// `sink` and the appspace's log.
    ///
    /// With `handoff` (the host's end of the sandbox's handoff socket) the
    /// connected socket is handed to the agent, which moves the data
    /// itself; without it, or when handing off fails, the host splices.
    pub async fn handle(
        self: Arc<Self>,
        req: EgressRequest,
        sink: Option<EgressSink>,
        log: Arc<AppLog>,
        handoff: Option<Arc<ds_proto::Handoff>>,
        resolver: Arc<resolver::Resolver>,
    ) {
        let _under_way = self.in_flight.enter();
        let destination = req.destination().to_string();
        let span = info_span!("egress", appspace = %self.appspace, %destination);
        let event = self
            .run(req, &destination, &log, handoff.as_deref(), &resolver)
            .instrument(span)
            .await;
        if let Some(sink) = sink {
            if sink.try_send(event).is_err() {
                warn!(appspace = %self.appspace, "egress log backlog full; an entry was dropped");
            }
        }
    }

    async fn run(
        &self,
        req: EgressRequest,
        destination: &str,
        log: &AppLog,
        handoff: Option<&ds_proto::Handoff>,
        resolver: &resolver::Resolver,
    ) -> EgressEvent {
        let started = Instant::now();
        let mut event = EgressEvent {
            appspace: self.appspace.clone(),
            destination: destination.to_owned(),
            address: None,
            outcome: Outcome::Denied,
            reason: String::new(),
            bytes_up: 0,
            bytes_down: 0,
            duration: Duration::ZERO,
        };
        let deny = |mut event: EgressEvent, req: EgressRequest, why: String| async move {
            log.host(&format!("egress denied: {destination}: {why}"));
            let _ = req.deny(&why).await;
            event.reason = why;
            event.duration = started.elapsed();
            event
        };
        if self.rate.check().is_err() {
            let why = format!(
                "egress rate limit reached ({} new connections per second)",
                self.limits.per_second
            );
            return deny(event, req, why).await;
        }
        let Ok(_slot) = self.open.clone().try_acquire_owned() else {
            let why = format!(
                "egress connection limit reached ({} open at once)",
                self.limits.max_connections
            );
            return deny(event, req, why).await;
        };
        let rules = self.rules();
        let host = req.destination().host.clone();
        let port = req.destination().port;
        let timeout = self.limits.connect_timeout;
        let verdict = rules::decide(&rules, &host, port, |name, port| async move {
            match tokio::time::timeout(timeout, resolver.resolve(&name, port)).await {
                Ok(found) => found,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out",
                )),
            }
        })
        .await;
        let addrs = match verdict {
            Verdict::Deny(why) => return deny(event, req, why).await,
            Verdict::Connect(addrs) => addrs,
        };
        let deadline = Instant::now() + timeout;
        let mut last_error = String::from("no address");
        let mut upstream = None;
        for addr in &addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, TcpStream::connect(addr)).await {
                Ok(Ok(conn)) => {
                    upstream = Some((conn, *addr));
                    break;
                }
                Ok(Err(e)) => last_error = format!("connecting to {addr}: {e}"),
                Err(_) => last_error = format!("connecting to {addr}: timed out"),
            }
        }
        let Some((conn, addr)) = upstream else {
            let mut event = deny(event, req, last_error).await;
            event.outcome = Outcome::Failed;
            return event;
        };
        let _ = conn.set_nodelay(true);
        event.address = Some(addr.to_string());
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        // Hand the socket to the agent when we can (it then moves the data
        // itself and the stream is only a lifeline); else splice here.
        let accepted = if handoff.is_some_and(|s| s.try_send(token, conn.as_fd()).is_ok()) {
            drop(conn);
            req.hand_off(token).await.map(|lifeline| (lifeline, None))
        } else {
            req.accept().await.map(|stream| (stream, Some(conn)))
        };
        let Ok((mut stream, conn)) = accepted else {
            event.outcome = Outcome::Failed;
            event.reason = "the agent went away".into();
            event.duration = started.elapsed();
            return event;
        };
        log.host(&format!("egress allowed: {destination} via {addr}"));
        event.outcome = Outcome::Allowed;
        match conn {
            None => {
                let mut report = [0u8; 16];
                match stream.read_exact(&mut report).await {
                    Ok(_) => {
                        let (up, down) = report.split_at(8);
                        event.bytes_up = u64::from_be_bytes(up.try_into().unwrap_or_default());
                        event.bytes_down = u64::from_be_bytes(down.try_into().unwrap_or_default());
                    }
                    Err(e) => event.reason = format!("the agent did not report the transfer: {e}"),
                }
            }
            Some(mut conn) => match tokio::io::copy_bidirectional_with_sizes(
                &mut stream,
                &mut conn,
                ds_proto::COPY_BUFFER,
                ds_proto::COPY_BUFFER,
            )
            .await
            {
                Ok((up, down)) => {
                    event.bytes_up = up;
                    event.bytes_down = down;
                }
                Err(e) => event.reason = format!("ended with an error: {e}"),
            },
        }
        event.duration = started.elapsed();
        log.host(&format!(
            "egress closed: {destination}: {} bytes out, {} bytes in, {} ms",
            event.bytes_up,
            event.bytes_down,
            event.duration.as_millis()
        ));
        event
    }
}
