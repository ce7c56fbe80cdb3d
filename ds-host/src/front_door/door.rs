//! The front door's side of the control socket: its [`Door`] (the route
//! table and the way to the supervisor), the one round trip of a cold
//! start, and the loop that takes what the supervisor sends.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::app_link::AppLink;
use super::routes::{Route, Routes};
use crate::front_link::messages::{Refusal, ToFront, ToSupervisor};
use crate::front_link::pending::Pending;
use crate::front_link::wire::{self, Wire, WireError};

/// Why no link to an appspace's app could be had.
#[derive(Debug, Clone)]
pub struct Unavailable {
    /// As a category.
    pub refusal: Refusal,
    /// In words.
    pub reason: String,
}

type StartAnswer = Result<(u64, u16, OwnedFd), Unavailable>;

/// The front door's routes and its way to the supervisor.
#[derive(Debug)]
pub struct Door {
    /// The route table.
    pub routes: Routes,
    wire: Wire,
    starts: Pending<StartAnswer>,
}

impl Door {
    /// A door over the control socket `wire`.
    pub fn new(routes: Routes, wire: Wire) -> Self {
        Self {
            routes,
            wire,
            starts: Pending::default(),
        }
    }

    /// The link to `route`'s running sandbox; if there is none, one round
    /// trip to the supervisor starts it. Concurrent callers share one ask.
    pub async fn link(&self, route: &Arc<Route>) -> Result<Arc<AppLink>, Unavailable> {
        if let Some(link) = route.live_link() {
            return Ok(link);
        }
        let _one_ask = route.starting.lock().await;
        if let Some(link) = route.live_link() {
            return Ok(link);
        }
        let (run, app_port, handoff) = self.ask_start(&route.name).await?;
        // Made here, on the worker that asked: its connections to the app
        // are made and used on this thread.
        let handoff = ds_proto::Handoff::start(handoff).map_err(|e| Unavailable {
            refusal: Refusal::Unavailable,
            reason: format!("taking its handoff socket: {e}"),
        })?;
        Ok(route.adopt(handoff, run, app_port))
    }

    async fn ask_start(&self, name: &str) -> StartAnswer {
        let gone = |reason: &str| Unavailable {
            refusal: Refusal::Unavailable,
            reason: reason.to_owned(),
        };
        let asked = self.starts.ask();
        let question = ToSupervisor::Start {
            request: asked.request,
            name: name.to_owned(),
        };
        if let Err(e) = self.wire.send(&question, &[]).await {
            return Err(gone(&format!("the supervisor could not be asked: {e}")));
        }
        let wait = self.routes.timing.start_answer_timeout;
        match tokio::time::timeout(wait, asked.answer()).await {
            Ok(Some(answer)) => answer,
            Ok(None) => Err(gone("the supervisor did not answer")),
            Err(_) => Err(gone(&format!(
                "the supervisor did not answer within {wait:?}"
            ))),
        }
    }

    fn answer(&self, request: u64, answer: StartAnswer) {
        if !self.starts.answer(request, answer) {
            debug!(request, "an answer to no start");
        }
    }

    /// Takes what the supervisor sends until it closes the socket (it
    /// stopped or died: the front door ends too). `stopping` is set when
    /// the supervisor says the host stops.
    pub async fn serve_supervisor(
        self: Arc<Self>,
        stopping: tokio::sync::watch::Sender<bool>,
        routed: tokio::sync::oneshot::Sender<()>,
    ) {
        let mut routed = Some(routed);
        let idle_every = (self.routes.timing.idle_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut idle_tick = tokio::time::interval(idle_every);
        loop {
            let got = tokio::select! {
                got = self.wire.recv::<ToFront>(ToFront::descriptors) => got,
                _ = idle_tick.tick() => {
                    for (name, run) in self.routes.release_idle() {
                        let _ = self.wire.send(&ToSupervisor::Idle { name, run }, &[]).await;
                    }
                    continue;
                }
            };
            let (msg, mut fds) = match got {
                Ok(got) => got,
                Err(WireError::Bad(why)) => {
                    warn!(%why, "refused a message from the supervisor");
                    continue;
                }
                Err(e) => {
                    debug!(error = %e, "the supervisor is gone");
                    return;
                }
            };
            match msg {
                ToFront::Routes { routes, last } => {
                    self.routes.receive(routes, last);
                    if last {
                        if let Some(routed) = routed.take() {
                            let _ = routed.send(());
                        }
                    }
                }
                ToFront::Running {
                    request,
                    name,
                    run,
                    app_port,
                } => {
                    let Some(handoff) = fds.pop() else { continue };
                    if let Err(e) = wire::check_handoff(&handoff) {
                        warn!(appspace = %name, error = %e, "refused a handoff socket");
                        if let Some(request) = request {
                            self.answer(
                                request,
                                Err(Unavailable {
                                    refusal: Refusal::Unavailable,
                                    reason: e.to_string(),
                                }),
                            );
                        }
                        continue;
                    }
                    match request {
                        Some(request) => self.answer(request, Ok((run, app_port, handoff))),
                        // Announced to a restarted front door: adopted here.
                        None => match (self.routes.named(&name), ds_proto::Handoff::start(handoff))
                        {
                            (Some(route), Ok(handoff)) => {
                                route.adopt(handoff, run, app_port);
                            }
                            (_, Err(e)) => {
                                warn!(appspace = %name, error = %e, "taking a handoff socket")
                            }
                            (None, _) => {
                                debug!(appspace = %name, "a running sandbox with no route")
                            }
                        },
                    }
                }
                ToFront::StartFailed {
                    request,
                    refusal,
                    reason,
                } => self.answer(request, Err(Unavailable { refusal, reason })),
                ToFront::Resolve { request, name } => {
                    let Some(socket) = fds.pop() else { continue };
                    let door = self.clone();
                    tokio::spawn(async move {
                        let (addresses, error) = match check_nameserver(&socket) {
                            Err(e) => (Vec::new(), Some(e)),
                            Ok(stream) => match super::dns::resolve(socket, &name, stream).await {
                                Ok(found) => (found, None),
                                Err(e) => (Vec::new(), Some(e)),
                            },
                        };
                        let answer = ToSupervisor::Resolved {
                            request,
                            addresses,
                            error,
                        };
                        let _ = door.wire.send(&answer, &[]).await;
                    });
                }
                ToFront::UsageRequest { request } => {
                    let usage = self.routes.usage();
                    let _ = self
                        .wire
                        .send(&ToSupervisor::Usage { request, usage }, &[])
                        .await;
                }
                ToFront::Stopping => {
                    self.routes.begin_stopping();
                    let _ = stopping.send(true);
                }
                ToFront::Init(_) => warn!("refused a second set-up from the supervisor"),
            }
            drop(fds);
        }
    }

    /// Tells the supervisor what confinement is in force.
    pub async fn report_confined(&self, confined: crate::front_link::messages::Confined) {
        let _ = self.wire.send(&ToSupervisor::Confined(confined), &[]).await;
    }
}

/// A nameserver socket must be a connected UDP or TCP socket; whether it
/// is TCP.
fn check_nameserver(fd: &OwnedFd) -> Result<bool, String> {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let kind = sockopt::socket_type(fd).map_err(|e| e.to_string())?;
    let domain = sockopt::socket_domain(fd).map_err(|e| e.to_string())?;
    let inet = domain == AddressFamily::INET || domain == AddressFamily::INET6;
    let connected = rustix::net::getpeername(fd)
        .map_err(|e| e.to_string())?
        .is_some();
    if !(kind == SocketType::DGRAM || kind == SocketType::STREAM) || !inet || !connected {
        return Err(format!(
            "a nameserver socket that is not a connected UDP or TCP socket ({domain:?}, {kind:?})"
        ));
    }
    Ok(kind == SocketType::STREAM)
}
