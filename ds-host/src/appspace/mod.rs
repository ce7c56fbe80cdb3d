//! Running appspaces, the supervisor's side: each one's sandbox is started
//! when the front door asks (concurrent asks share one start), controlled
//! over its ds-proto channel, and marked stopped when its sandbox exits so
//! that the next ask starts it again. What the front door gets for a
//! running sandbox is a [`Ticket`]: the run's number, the app's port and
//! a copy of the host end of its handoff socket.
//!
//! The running sandbox is read through an atomic pointer. Starts and
//! stops are serialised per appspace by an async mutex that only they
//! take, so an admin asking how an appspace is doing never waits for a
//! cold start.

pub(crate) mod applog;
mod config;
mod probe;
mod run_once;
pub(crate) mod sandbox_spawn;
mod start;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use ds_proto::{ControlMessage, Session, SessionHandle};
use ds_sandbox::cgroup::{Cgroup, CgroupError};
use tracing::{info, warn};

use crate::egress::{EgressGate, EgressSink};
use crate::front_link::messages::Usage;
use applog::AppLog;
pub use applog::{flush_all as flush_logs, LogLimits};
pub use config::{deno_run_args, AppspaceConfig, Lifecycle, ResourceLimits, RuntimeInfo};
pub use probe::ProbeError;
pub use run_once::RunOnceError;
use sandbox_spawn::SandboxSpawner;

/// The longest wait between restarts after repeated crashes.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a stopped sandbox's launcher has to exit (after its channel
/// closed) before it is killed.
const LAUNCHER_EXIT: Duration = Duration::from_secs(5);
/// A sandbox that ran this long before crashing starts its backoff afresh.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// Why an appspace could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The sandbox process could not be spawned.
    #[error("spawning the sandbox: {0}")]
    Spawn(std::io::Error),
    /// The channel failed before the app was ready.
    #[error("the sandbox's channel failed: {0}")]
    Channel(#[from] ds_proto::ProtoError),
    /// The app did not accept connections in time.
    #[error("the app did not become ready within {0:?}")]
    Timeout(Duration),
    /// An admin paused the appspace.
    #[error("it is paused by the administrator")]
    Paused,
    /// The host is shutting down, or the appspace was deleted.
    #[error("the host is shutting down")]
    Retired,
    /// It cannot run until an admin repairs it.
    #[error("it is broken: {0}")]
    Broken(String),
    /// The appspace crashed recently and waits before the next start.
    #[error("it crashed ({reason}); the next start is in {retry_in:?}")]
    Backoff {
        /// Why it last failed.
        reason: String,
        /// Until the next attempt.
        retry_in: Duration,
    },
}

/// How sandboxes are started on this host.
#[derive(Debug)]
pub struct Launcher {
    /// The Deno binary, for Deno apps.
    pub deno: Option<PathBuf>,
    /// Starts the `ds-sandbox` processes, one ahead of need.
    spawner: Arc<SandboxSpawner>,
    /// Where egress attempts are recorded.
    egress_sink: Option<EgressSink>,
    /// Egress names to addresses.
    resolver: Arc<crate::egress::resolver::Resolver>,
    /// Where sandbox cgroups go.
    cgroups: ds_sandbox::cgroup::Placement,
    /// What ended sandboxes used, as their launchers reported it.
    ended: Arc<crate::usage::Ended>,
}

impl Launcher {
    /// A launcher using these binaries.
    pub fn new(sandbox_bin: PathBuf, deno: Option<PathBuf>) -> Self {
        Self {
            spawner: SandboxSpawner::new(sandbox_bin),
            deno,
            egress_sink: None,
            resolver: crate::egress::resolver::Resolver::system(&[]),
            cgroups: ds_sandbox::cgroup::Placement::fallback(),
            ended: Arc::default(),
        }
    }

    /// What ended sandboxes used (the usage history's, docs/usage.md).
    pub fn ended(&self) -> Arc<crate::usage::Ended> {
        self.ended.clone()
    }

    /// Puts sandbox cgroups where `placement` says (the host's delegated
    /// subtree under systemd).
    pub fn with_cgroups(mut self, placement: ds_sandbox::cgroup::Placement) -> Self {
        self.cgroups = placement;
        self
    }

    /// Where sandbox cgroups go.
    pub fn cgroups(&self) -> &ds_sandbox::cgroup::Placement {
        &self.cgroups
    }

    /// Starts a spare launcher now, so that the first cold start does not
    /// pay for starting `ds-sandbox` either (see [`crate::sandbox_spawn`]).
    pub fn prepare_spare(&self) {
        self.spawner.prepare_spare();
    }

    /// Resolves egress names with `resolver`.
    pub fn with_resolver(mut self, resolver: Arc<crate::egress::resolver::Resolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Records every egress attempt into `sink`.
    pub fn with_egress_sink(mut self, sink: EgressSink) -> Self {
        self.egress_sink = Some(sink);
        self
    }
}

/// Numbers sandbox runs, so that connections made to one run are never
/// reused with the next.
static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

/// What the front door needs to reach a running sandbox's app.
#[derive(Debug)]
pub struct Ticket {
    /// The run (unique since the supervisor started).
    pub run: u64,
    /// The app's port inside the sandbox.
    pub app_port: u16,
    /// A copy of the host end of its handoff socket.
    pub handoff: OwnedFd,
}

struct Running {
    /// Kept so that the channel's receiving half lives as long as we use it.
    _session: Arc<Session>,
    /// Its cgroup's parent and name.
    cgroup: (String, String),
    handle: SessionHandle,
    run: u64,
    app_port: u16,
    /// The host end of the handoff socket, copied into each ticket.
    handoff: OwnedFd,
    child_pid: Option<u32>,
    started: Instant,
    /// Set when we stop it, so that its exit is not taken for a crash.
    stopping: Arc<AtomicBool>,
    /// True once its launcher has exited (and removed its cgroup).
    ended: tokio::sync::watch::Receiver<bool>,
}

impl Running {
    fn is_live(&self) -> bool {
        !self.handle.is_closed()
    }

    fn ticket(&self) -> std::io::Result<Ticket> {
        Ok(Ticket {
            run: self.run,
            app_port: self.app_port,
            handoff: self.handoff.try_clone()?,
        })
    }
}

#[derive(Debug, Default)]
struct Crashes {
    consecutive: u32,
    retry_at: Option<Instant>,
    reason: String,
}

/// One appspace and, when running, its sandbox.
pub struct Appspace {
    /// Its configuration.
    pub config: AppspaceConfig,
    log: Arc<AppLog>,
    /// The running sandbox, if any: read lock-free by every request.
    current: ArcSwapOption<Running>,
    /// Taken by starts and stops only (never by requests to a running
    /// sandbox, nor by status queries).
    start_lock: tokio::sync::Mutex<()>,
    /// A start is under way (for status).
    starting: AtomicBool,
    /// Deleted, or the host is stopping: never starts again.
    retired: AtomicBool,
    crashes: Arc<std::sync::Mutex<Crashes>>,
    limits: std::sync::Mutex<ResourceLimits>,
    paused: AtomicBool,
    /// The front door's counts, as it last reported them.
    usage: std::sync::Mutex<Usage>,
    egress: Arc<EgressGate>,
}

fn record_crash(
    crashes: &std::sync::Mutex<Crashes>,
    reason: String,
    ran_for: Duration,
) -> Duration {
    let mut c = crashes.lock().unwrap_or_else(|p| p.into_inner());
    c.consecutive = if ran_for >= STABLE_RUN {
        1
    } else {
        c.consecutive + 1
    };
    let delay = Duration::from_secs(1u64 << (c.consecutive - 1).min(6)).min(MAX_BACKOFF);
    c.retry_at = Some(Instant::now() + delay);
    c.reason = reason;
    delay
}

impl std::fmt::Debug for Appspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appspace")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Appspace {
    /// A stopped appspace, logging under `config.log_dir`.
    pub fn new(config: AppspaceConfig, life: &Lifecycle) -> std::io::Result<Self> {
        let log = AppLog::open(&config.log_dir, life.log_limits)?;
        Ok(Self {
            egress: Arc::new(EgressGate::new(
                &config.name,
                config.egress.clone(),
                life.egress,
            )),
            limits: std::sync::Mutex::new(config.limits),
            paused: AtomicBool::new(config.paused),
            log,
            current: ArcSwapOption::empty(),
            start_lock: tokio::sync::Mutex::new(()),
            starting: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            crashes: Arc::default(),
            usage: std::sync::Mutex::default(),
            config,
        })
    }

    /// A line from the host in the appspace's log.
    pub fn log_host(&self, text: &str) {
        self.log.host(text);
    }

    /// Takes the front door's latest counts.
    pub fn set_usage(&self, usage: Usage) {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = usage;
    }

    /// The running sandbox, if it is live (lock-free).
    fn live(&self) -> Option<Arc<Running>> {
        self.current.load_full().filter(|r| r.is_live())
    }

    /// Whether its sandbox is running now.
    pub fn is_running(&self) -> bool {
        self.live().is_some()
    }

    /// The running sandbox's ticket, if it runs.
    pub fn ticket(&self) -> Option<Ticket> {
        self.live().and_then(|r| r.ticket().ok())
    }

    /// The running sandbox's ticket, starting it first if needed.
    /// Concurrent callers share one start.
    pub async fn ensure_running(
        &self,
        launcher: &Launcher,
        life: &Lifecycle,
    ) -> Result<Ticket, StartError> {
        if let Some(r) = self.live() {
            return r.ticket().map_err(StartError::Spawn);
        }
        if self.is_paused() {
            return Err(StartError::Paused);
        }
        let _starting = self.start_lock.lock().await;
        if let Some(r) = self.live() {
            return r.ticket().map_err(StartError::Spawn);
        }
        // Checked under the lock that stops take: a host that is stopping
        // (or a delete) retires the appspace first, then stops it, so no
        // start can slip in after its stop.
        if self.retired.load(Ordering::Acquire) {
            return Err(StartError::Retired);
        }
        if let Some(why) = &self.config.broken {
            return Err(StartError::Broken(why.clone()));
        }
        // Paused while we waited for a start in progress.
        if self.is_paused() {
            return Err(StartError::Paused);
        }
        {
            let c = self.crashes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = c.retry_at.filter(|at| *at > Instant::now()) {
                return Err(StartError::Backoff {
                    reason: c.reason.clone(),
                    retry_in: at - Instant::now(),
                });
            }
        }
        // A run that ended by itself (a crash): its launcher may still be
        // removing the cgroup this run's will take the name of.
        if let Some(old) = self.current.swap(None) {
            let mut ended = old.ended.clone();
            let _ = tokio::time::timeout(LAUNCHER_EXIT, ended.wait_for(|e| *e)).await;
        }
        self.starting.store(true, Ordering::Release);
        let started = self.start(launcher, life).await;
        self.starting.store(false, Ordering::Release);
        match started {
            Ok(started) => {
                let ticket = started.ticket().map_err(StartError::Spawn);
                self.current.store(Some(Arc::new(started)));
                ticket
            }
            Err(e) => {
                let delay = record_crash(&self.crashes, e.to_string(), Duration::ZERO);
                self.log.host(&format!(
                    "failed to start: {e}; next start in {delay:?} at the earliest"
                ));
                Err(e)
            }
        }
    }

    /// Stops the sandbox if its run is still `run`: the front door let go
    /// of it after the idle timeout without requests.
    pub async fn stop_idle_run(&self, run: u64, life: &Lifecycle) {
        let grace = life.stop_grace;
        if self.current.load().as_ref().is_some_and(|r| r.run == run) {
            self.log.host(&format!(
                "stopping after {:?} without requests",
                life.idle_timeout
            ));
            info!(appspace = %self.config.name, "stopping idle appspace");
            self.stop_if(grace, |r| r.run == run).await;
        }
    }

    /// Its egress policy.
    pub fn egress(&self) -> &EgressGate {
        &self.egress
    }

    /// Whether an admin paused it.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Pauses (stopping the sandbox; nothing starts it until resumed) or
    /// resumes the appspace.
    pub async fn set_paused(&self, paused: bool, grace: Duration) {
        self.paused.store(paused, Ordering::Release);
        if paused {
            self.log.host("paused by the administrator");
            self.stop(grace).await;
        } else {
            self.log.host("resumed by the administrator");
        }
    }

    /// Starts the sandbox now (an admin's explicit start forgets the crash
    /// backoff).
    pub async fn start_now(&self, launcher: &Launcher, life: &Lifecycle) -> Result<(), StartError> {
        self.crashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retry_at = None;
        self.ensure_running(launcher, life).await.map(drop)
    }

    /// Freezes or thaws its running sandbox (cgroup v2); `false` if it
    /// cannot (not running, or cgroup v1).
    pub async fn freeze(&self, frozen: bool) -> Result<bool, CgroupError> {
        let Some(cgroup) = self.live().as_deref().and_then(Self::cgroup) else {
            return Ok(false);
        };
        tokio::task::spawn_blocking(move || cgroup.freeze(frozen))
            .await
            .unwrap_or(Ok(false))
    }

    /// The limits its next (or current) sandbox runs under.
    pub fn limits(&self) -> ResourceLimits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cgroup of the running sandbox.
    fn cgroup(running: &Running) -> Option<Cgroup> {
        Cgroup::open(&running.cgroup.0, &running.cgroup.1).ok()
    }

    /// Its sandbox's cgroup name: by appspace (`as-` keeps it clear of
    /// the kernel's own file names).
    pub fn cgroup_name(&self) -> String {
        format!("as-{}", self.config.name)
    }

    /// Takes the admin's settings as `rec` records them now (limits,
    /// egress allowlist, paused): a successor built before an upgrade or a
    /// restore finished gets what an admin changed meanwhile.
    /// Returns whether the allowlist changed (a running Deno app holds it
    /// in its own permissions until it restarts).
    pub(crate) async fn adopt(&self, rec: &crate::state::AppspaceRecord, grace: Duration) -> bool {
        let rules: Vec<crate::egress::rules::Rule> =
            rec.egress.iter().filter_map(|e| e.parse().ok()).collect();
        let egress_changed = rules != self.egress.rules();
        if egress_changed {
            self.egress.set_rules(rules);
        }
        let limits = ResourceLimits {
            memory_bytes: rec.memory_bytes,
            cpus: rec.cpus,
            pids: rec.pids,
        };
        if limits != self.limits() {
            if let Err(e) = self.set_limits(limits) {
                // Recorded and kept for its next start; the running
                // cgroup refused (memory below what is in use, say).
                warn!(appspace = %self.config.name, error = %e, "the running sandbox refused the recorded limits");
            }
        }
        if rec.paused != self.is_paused() {
            self.set_paused(rec.paused, grace).await;
        }
        egress_changed
    }

    /// Changes the limits; a running sandbox's cgroup is changed at once.
    /// Returns whether a running sandbox was changed.
    pub fn set_limits(&self, limits: ResourceLimits) -> Result<bool, CgroupError> {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
        let Some(cgroup) = self.live().as_deref().and_then(Self::cgroup) else {
            return Ok(false);
        };
        cgroup.set_limits(&limits.for_cgroup())?;
        self.log.host(&format!(
            "limits changed: memory {} MiB, cpu {}, pids {}",
            limits.memory_bytes >> 20,
            limits.cpus,
            limits.pids
        ));
        Ok(true)
    }

    /// What it is doing now; never waits for a start or a stop.
    pub fn runtime(&self) -> RuntimeInfo {
        let usage = self.usage.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let base = RuntimeInfo {
            requests: usage.requests,
            connections_handed_over: usage.connections_handed_over,
            connections_refused: usage.connections_refused,
            starting: self.starting.load(Ordering::Acquire),
            ..RuntimeInfo::default()
        };
        match self.live() {
            Some(r) => RuntimeInfo {
                running: true,
                uptime: Some(r.started.elapsed()),
                usage: Self::cgroup(&r).map(|c| c.usage()),
                ..base
            },
            None => base,
        }
    }

    /// Never starts again: it was replaced (by an upgrade) while out of
    /// service. Starts that waited for it find it retired and ask the
    /// host for its successor.
    pub fn mark_replaced(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Whether it was retired (deleted, replaced, or the host stops).
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Never starts again (deleted, or the host is stopping), and stops
    /// the sandbox if it runs.
    pub async fn retire(&self, grace: Duration) {
        self.retired.store(true, Ordering::Release);
        self.stop(grace).await;
    }

    /// Asks a running sandbox to stop (SIGTERM to the app, SIGKILL after
    /// `grace`) and waits until its channel closes. A start under way
    /// finishes first.
    pub async fn stop(&self, grace: Duration) {
        self.stop_if(grace, |_| true).await;
    }

    /// [`Appspace::stop`] if the running sandbox is one `which` accepts.
    async fn stop_if(&self, grace: Duration, which: impl Fn(&Running) -> bool) {
        let _no_start = self.start_lock.lock().await;
        self.stop_locked(grace, which).await;
    }

    /// Out of service while `work` runs (`why`: a backup or a restore of
    /// its data): its sandbox is stopped and none starts until `work` is
    /// done (starts asked for meanwhile wait, then run). Returns whether a
    /// sandbox was running, and what `work` returned.
    pub async fn out_of_service<T>(
        &self,
        grace: Duration,
        why: &str,
        work: impl std::future::Future<Output = T>,
    ) -> (bool, T) {
        let _no_start = self.start_lock.lock().await;
        let was_running = self.live().is_some();
        self.stop_locked(grace, |_| true).await;
        self.log.host(&format!("out of service: {why}"));
        let done = work.await;
        self.log.host("back in service");
        (was_running, done)
    }

    /// [`Appspace::stop_if`] with the start lock held.
    async fn stop_locked(&self, grace: Duration, which: impl Fn(&Running) -> bool) {
        if !self.current.load().as_deref().is_some_and(&which) {
            return;
        }
        let Some(running) = self.current.swap(None) else {
            return;
        };
        running.stopping.store(true, Ordering::Release);
        let _ = running
            .handle
            .send_control(ControlMessage::Stop {
                grace_ms: grace.as_millis() as u64,
            })
            .await;
        let kill = || {
            if let Some(pid) = running
                .child_pid
                .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        };
        if tokio::time::timeout(grace + Duration::from_secs(2), running.handle.closed())
            .await
            .is_err()
        {
            kill();
        }
        // Until its launcher has exited: it removes the sandbox's cgroup
        // by name on the way out, and the next run of this appspace (which
        // may start the moment this returns) makes one of the same name.
        let mut ended = running.ended.clone();
        if tokio::time::timeout(LAUNCHER_EXIT, ended.wait_for(|e| *e))
            .await
            .is_err()
        {
            kill();
            let _ = tokio::time::timeout(LAUNCHER_EXIT, ended.wait_for(|e| *e)).await;
        }
    }
}
