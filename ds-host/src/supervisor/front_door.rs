//! Keeping the front door: the supervisor starts `ds-host __front-door`
//! (an exec of this binary, never a fork into set-up code), gives it its
//! set-up and listening sockets over the control socket, then the route
//! table and each running sandbox's handoff socket, answers its cold
//! starts and idle stops, and restarts it if it dies: the listeners,
//! sandboxes and their handoff sockets belong to the supervisor, so
//! running appspaces keep running and the new front door gets them all.
//!
//! Orders for one appspace (start, idle stop) are carried out one after
//! another, in the order the front door sent them, by a task per
//! appspace; different appspaces never wait for each other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::appspace::StartError;
use crate::front_link::messages::{
    Confined, Init, Refusal, Route, ToFront, ToSupervisor, Usage, ROUTES_PER_MESSAGE,
};
use crate::front_link::pending::Pending;
use crate::front_link::wire::{self, Wire, WireError};
use crate::host::Host;

/// Restarts come no faster than this after a front door that ran briefly.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// A front door that ran this long restarts at once.
const STABLE_RUN: Duration = Duration::from_secs(10);
/// How long an admin query waits for the front door's counts.
const USAGE_WAIT: Duration = Duration::from_secs(1);
/// How long a closing front door has to exit before it is killed.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Where the host is in its life, as the keeper acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving.
    Serving,
    /// Stopping: the front door answers 503 and accepts nothing new.
    Stopping,
    /// Everything stopped: the front door ends.
    Closing,
}

/// The front door as `dsctl status` shows it.
#[derive(Debug, Clone, Default)]
pub struct FrontStatus {
    /// Its pid, while it runs.
    pub pid: Option<u32>,
    /// What it applied to itself, once it said.
    pub confined: Option<Confined>,
    /// Times it was restarted.
    pub restarts: u32,
    /// How the last one ended.
    pub last_exit: Option<String>,
}

/// A lookup's answer: the addresses, or why there are none.
type Lookup = Result<Vec<IpAddr>, String>;

enum Order {
    /// Answered on the control socket it came from, if that front door
    /// still runs (a weak reference: a closing keeper's socket closes).
    Start {
        request: u64,
        wire: std::sync::Weak<Wire>,
    },
    Idle {
        run: u64,
    },
}

/// The supervisor's keeper of the front door process.
pub struct FrontDoor {
    host: Arc<Host>,
    exe: PathBuf,
    init: Init,
    listeners: Vec<OwnedFd>,
    current: Mutex<Option<Arc<Wire>>>,
    status: Mutex<FrontStatus>,
    usages: Pending<Vec<Usage>>,
    lookups: Pending<Lookup>,
    orders: Mutex<HashMap<String, mpsc::UnboundedSender<Order>>>,
}

impl std::fmt::Debug for FrontDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontDoor")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl FrontDoor {
    /// A keeper that will run `exe __front-door` with `init` and
    /// `listeners` (one per `init.listeners` entry).
    pub fn new(host: Arc<Host>, exe: PathBuf, init: Init, listeners: Vec<OwnedFd>) -> Arc<Self> {
        Arc::new(Self {
            host,
            exe,
            init,
            listeners,
            current: Mutex::default(),
            status: Mutex::default(),
            usages: Pending::default(),
            lookups: Pending::default(),
            orders: Mutex::default(),
        })
    }

    /// Its state now.
    pub fn status(&self) -> FrontStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps a front door running until `phase` is [`Phase::Closing`] (it
    /// has ended then); the first one is confined and serving when
    /// `ready` is sent.
    pub async fn keep(
        self: Arc<Self>,
        mut phase: watch::Receiver<Phase>,
        ready: oneshot::Sender<()>,
    ) {
        let mut ready = Some(ready);
        loop {
            let started = Instant::now();
            let ended = self.run_once(&mut phase, &mut ready).await;
            let why = match &ended {
                Ok(status) => status.to_string(),
                Err(e) => e.to_string(),
            };
            {
                let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
                status.pid = None;
                status.confined = None;
                status.last_exit = Some(why.clone());
            }
            *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if *phase.borrow() == Phase::Closing {
                return;
            }
            warn!(status = %why, "the front door ended; starting a new one");
            if started.elapsed() < STABLE_RUN {
                tokio::select! {
                    () = tokio::time::sleep(RESTART_BACKOFF) => {}
                    _ = phase.wait_for(|p| *p == Phase::Closing) => return,
                }
            }
            self.status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .restarts += 1;
        }
    }

    fn spawn(&self) -> std::io::Result<(tokio::process::Child, OwnedFd)> {
        let (ours, theirs) = wire::pair()?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg0("ds-host")
            .arg("__front-door")
            .arg("--control-fd")
            .arg(theirs.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = {
            // Its end is inheritable only while no other spawn can pick it up.
            let _only_spawn = crate::appspace::sandbox_spawn::SPAWN_LOCK
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())?;
            cmd.spawn()
        };
        drop(theirs);
        Ok((child?, ours))
    }

    async fn run_once(
        self: &Arc<Self>,
        phase: &mut watch::Receiver<Phase>,
        ready: &mut Option<oneshot::Sender<()>>,
    ) -> std::io::Result<std::process::ExitStatus> {
        let (mut child, control) = self.spawn()?;
        let pid = child.id();
        // Its workers' priority, set while it has one thread: the threads
        // it makes start with it, and it needs no privilege for that.
        if let Some(p) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            if let Err(e) = rustix::process::setpriority_process(
                Some(p),
                crate::front_door::conn_workers::WORKER_NICE,
            ) {
                info!(error = %e, "the front door runs at the default priority (raising it was refused)");
            }
        }
        self.status.lock().unwrap_or_else(|p| p.into_inner()).pid = pid;
        let wire = Arc::new(Wire::new(control)?);
        let fds: Vec<_> = self.listeners.iter().map(|f| f.as_fd()).collect();
        let io = |e: WireError| std::io::Error::other(e.to_string());
        wire.send(&ToFront::Init(self.init.clone()), &fds)
            .await
            .map_err(io)?;
        self.send_routes(&wire).await.map_err(io)?;
        for appspace in self.host.all() {
            if let Some(ticket) = appspace.ticket() {
                let running = ToFront::Running {
                    request: None,
                    name: appspace.config.name.clone(),
                    run: ticket.run,
                    app_port: ticket.app_port,
                };
                wire.send(&running, &[ticket.handoff.as_fd()])
                    .await
                    .map_err(io)?;
            }
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(wire.clone());
        let mut changes = self.host.watch_changes();
        let mut told_stopping = false;
        loop {
            if *phase.borrow() >= Phase::Stopping && !told_stopping {
                told_stopping = true;
                let _ = wire.send(&ToFront::Stopping, &[]).await;
            }
            if *phase.borrow() == Phase::Closing {
                drop(wire);
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return match tokio::time::timeout(EXIT_WAIT, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        let _ = child.kill().await;
                        child.wait().await
                    }
                };
            }
            tokio::select! {
                status = child.wait() => return status,
                _ = phase.changed() => {}
                _ = changes.changed() => {
                    if let Err(e) = self.send_routes(&wire).await {
                        warn!(error = %e, "sending the front door its routes");
                    }
                }
                got = wire.recv::<ToSupervisor>(|_| 0) => match got {
                    Ok((msg, _)) => self.take(msg, &wire, ready),
                    Err(WireError::Bad(why)) => warn!(%why, "refused a message from the front door"),
                    // It closed its end (or sent what reads as that): it
                    // is gone, or made to be; its exit status comes next.
                    Err(_) => {
                        let _ = child.start_kill();
                        return child.wait().await;
                    }
                },
            }
        }
    }

    fn take(
        self: &Arc<Self>,
        msg: ToSupervisor,
        wire: &Arc<Wire>,
        ready: &mut Option<oneshot::Sender<()>>,
    ) {
        match msg {
            ToSupervisor::Confined(confined) => {
                info!(
                    uid = confined.uid,
                    landlock_abi = confined.landlock_abi,
                    seccomp_phase = confined.seccomp_phase,
                    "the front door is confined and serving"
                );
                self.status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .confined = Some(confined);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            ToSupervisor::Start { request, name } => self.order(
                &name,
                Order::Start {
                    request,
                    wire: Arc::downgrade(wire),
                },
            ),
            ToSupervisor::Idle { name, run } => self.order(&name, Order::Idle { run }),
            ToSupervisor::Resolved {
                request,
                addresses,
                error,
            } => {
                let answer = match error {
                    Some(e) => Err(e),
                    None => Ok(addresses),
                };
                self.lookups.answer(request, answer);
            }
            ToSupervisor::Usage { request, usage } => {
                self.usages.answer(request, usage);
            }
        }
    }

    /// Queues `order` for the appspace `name`. The front door is not
    /// trusted with the supervisor's memory: a name that is no appspace
    /// gets no queue (a start is refused at once, an idle stop ignored).
    fn order(self: &Arc<Self>, name: &str, order: Order) {
        if self
            .host
            .get(name)
            .filter(|a| a.config.name == name)
            .is_none()
        {
            if let Order::Start { request, wire } = order {
                tokio::spawn(async move {
                    if let Some(wire) = wire.upgrade() {
                        let failed = ToFront::StartFailed {
                            request,
                            refusal: Refusal::Unavailable,
                            reason: "no such appspace".into(),
                        };
                        let _ = wire.send(&failed, &[]).await;
                    }
                });
            }
            return;
        }
        let mut orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
        let queue = orders.entry(name.to_owned()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(self.clone().carry_out(name.to_owned(), rx));
            tx
        });
        let _ = queue.send(order);
    }

    /// One appspace's orders, one after another.
    async fn carry_out(self: Arc<Self>, name: String, mut orders: mpsc::UnboundedReceiver<Order>) {
        while let Some(order) = orders.recv().await {
            let appspace = self.host.get(&name).filter(|a| a.config.name == name);
            match order {
                Order::Start { request, wire } => {
                    let answer = match &appspace {
                        Some(a) => self.start_current(&name, a.clone()).await.map_err(|e| {
                            let refusal = match e {
                                StartError::Paused => Refusal::Paused,
                                _ => Refusal::Unavailable,
                            };
                            (refusal, e.to_string())
                        }),
                        None => Err((Refusal::Unavailable, "no such appspace".into())),
                    };
                    let Some(wire) = wire.upgrade() else {
                        continue; // that front door is gone; the ticket too
                    };
                    let sent = match answer {
                        Ok(ticket) => {
                            let running = ToFront::Running {
                                request: Some(request),
                                name: name.clone(),
                                run: ticket.run,
                                app_port: ticket.app_port,
                            };
                            wire.send(&running, &[ticket.handoff.as_fd()]).await
                        }
                        Err((refusal, reason)) => {
                            let failed = ToFront::StartFailed {
                                request,
                                refusal,
                                reason,
                            };
                            wire.send(&failed, &[]).await
                        }
                    };
                    if let Err(e) = sent {
                        warn!(appspace = %name, error = %e, "answering the front door");
                    }
                }
                Order::Idle { run } => {
                    if let Some(a) = appspace {
                        a.stop_idle_run(run, &self.host.lifecycle).await;
                    }
                }
            }
        }
    }

    /// Starts `appspace`, or the one that replaced it while the start
    /// waited (an upgrade swaps the appspace while it is out of service;
    /// the start asked for meanwhile is for its successor).
    async fn start_current(
        &self,
        name: &str,
        mut appspace: Arc<crate::appspace::Appspace>,
    ) -> Result<crate::appspace::Ticket, StartError> {
        loop {
            let started = appspace
                .ensure_running(&self.host.launcher, &self.host.lifecycle)
                .await;
            match started {
                Err(StartError::Retired) if !self.host.is_stopping() => {
                    match self.host.get(name).filter(|a| a.config.name == name) {
                        Some(next) if !Arc::ptr_eq(&next, &appspace) && !next.is_retired() => {
                            appspace = next;
                        }
                        _ => return Err(StartError::Retired),
                    }
                }
                other => return other,
            }
        }
    }

    async fn send_routes(&self, wire: &Wire) -> Result<(), WireError> {
        let mut routes: Vec<Route> = self
            .host
            .all()
            .iter()
            .map(|a| Route {
                domain: a.config.domain.to_ascii_lowercase(),
                name: a.config.name.clone(),
            })
            .collect();
        routes.sort_by(|a, b| a.domain.cmp(&b.domain));
        let parts: Vec<&[Route]> = if routes.is_empty() {
            vec![&[]]
        } else {
            routes.chunks(ROUTES_PER_MESSAGE).collect()
        };
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let msg = ToFront::Routes {
                routes: part.to_vec(),
                last: i + 1 == count,
            };
            wire.send(&msg, &[]).await?;
        }
        Ok(())
    }

    /// Has the front door look `name` up over `socket` (connected to a
    /// nameserver): the addresses only, parsed there.
    pub async fn resolve(&self, name: &str, socket: OwnedFd) -> Lookup {
        let wire = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or("no resolver (the front door is not running)")?;
        // A lookup given up (the caller's timeout) forgets its question.
        let asked = self.lookups.ask();
        let question = ToFront::Resolve {
            request: asked.request,
            name: name.to_owned(),
        };
        wire.send(&question, &[socket.as_fd()])
            .await
            .map_err(|e| e.to_string())?;
        asked
            .answer()
            .await
            .unwrap_or_else(|| Err("the front door ended".into()))
    }

    /// Asks the front door for its counts and gives each appspace its own;
    /// without an answer within a second, the last ones stay. Returns the
    /// counts it answered with.
    pub async fn refresh_usage(&self) -> Option<Vec<crate::front_link::messages::Usage>> {
        let wire = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let asked = self.usages.ask();
        let question = ToFront::UsageRequest {
            request: asked.request,
        };
        let answered = async {
            wire.send(&question, &[]).await.ok()?;
            asked.answer().await
        };
        let usage = tokio::time::timeout(USAGE_WAIT, answered)
            .await
            .ok()
            .flatten();
        for u in usage.iter().flatten() {
            if let Some(a) = self.host.get(&u.name).filter(|a| a.config.name == u.name) {
                a.set_usage(u.clone());
            }
        }
        usage
    }
}
