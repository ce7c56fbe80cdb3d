//! Running appspaces: each one's sandbox is started on demand (concurrent
//! first requests share one start), reached over its ds-proto channel, and
//! marked stopped when its sandbox exits so that the next request starts
//! it again.
//!
//! A warm request takes no lock: the running sandbox is read through an
//! atomic pointer, and its counters are atomics. Starts and stops are
//! serialised per appspace by an async mutex that only they take, so an
//! admin asking how an appspace is doing never waits for a cold start.

pub(crate) mod app_link;
pub(crate) mod applog;
mod config;
pub(crate) mod sandbox_spawn;
mod start;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use ds_proto::{ControlMessage, Session, SessionHandle};
use ds_sandbox::cgroup::{Cgroup, CgroupError};
use tracing::info;

use crate::egress::{EgressGate, EgressSink};
use crate::front_door::upstream_pool::UpstreamPool;
use app_link::{AppLink, LinkCounters};
use applog::AppLog;
pub use applog::{flush_all as flush_logs, LogLimits};
pub use config::{deno_run_args, AppspaceConfig, Lifecycle, ResourceLimits, RuntimeInfo};
use sandbox_spawn::SandboxSpawner;

/// The longest wait between restarts after repeated crashes.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
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
    /// Where sandbox cgroups go.
    cgroups: ds_sandbox::cgroup::Placement,
}

impl Launcher {
    /// A launcher using these binaries.
    pub fn new(sandbox_bin: PathBuf, deno: Option<PathBuf>) -> Self {
        Self {
            spawner: SandboxSpawner::new(sandbox_bin),
            deno,
            egress_sink: None,
            cgroups: ds_sandbox::cgroup::Placement::fallback(),
        }
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

    /// Records every egress attempt into `sink`.
    pub fn with_egress_sink(mut self, sink: EgressSink) -> Self {
        self.egress_sink = Some(sink);
        self
    }
}

struct Running {
    /// Kept so that the channel's receiving half lives as long as we use it.
    _session: Arc<Session>,
    /// Its cgroup's parent and name.
    cgroup: (String, String),
    handle: SessionHandle,
    link: AppLink,
    child_pid: Option<u32>,
    started: Instant,
    /// Set when we stop it, so that its exit is not taken for a crash.
    stopping: Arc<AtomicBool>,
}

impl Running {
    fn is_live(&self) -> bool {
        !self.handle.is_closed()
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
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` of the last request's start or end.
    last_used_ms: AtomicU64,
    epoch: Instant,
    limits: std::sync::Mutex<ResourceLimits>,
    paused: AtomicBool,
    requests: AtomicU64,
    links: Arc<LinkCounters>,
    egress: Arc<EgressGate>,
    /// The front door's keep-alive connections to its app.
    pub(crate) pool: Arc<UpstreamPool>,
    /// The parent of its requests' spans: made once, so that a request's
    /// own span formats only what differs per request.
    span: tracing::Span,
}

/// Marks a request in flight until dropped (kept by the response body, so
/// a long download counts until its last byte).
#[derive(Debug)]
pub struct RequestGuard(Arc<Appspace>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
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
            in_flight: AtomicUsize::new(0),
            last_used_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            requests: AtomicU64::new(0),
            links: Arc::default(),
            pool: Arc::default(),
            span: tracing::info_span!(parent: None, "appspace", appspace = config.name.as_str()),
            config,
        })
    }

    /// Its span, the parent of its requests' spans.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_used_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed();
        now.saturating_sub(Duration::from_millis(
            self.last_used_ms.load(Ordering::Relaxed),
        ))
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.touch();
        RequestGuard(self.clone())
    }

    /// The running sandbox, if it is live (lock-free).
    fn live(&self) -> Option<Arc<Running>> {
        self.current.load_full().filter(|r| r.is_live())
    }

    /// Whether its sandbox is running now.
    pub fn is_running(&self) -> bool {
        self.live().is_some()
    }

    /// The way to the running sandbox's app, starting it first if needed.
    /// Concurrent callers share one start; a running sandbox is reached
    /// without taking any lock.
    pub async fn link(&self, launcher: &Launcher, life: &Lifecycle) -> Result<AppLink, StartError> {
        if let Some(r) = self.live() {
            return Ok(r.link.clone());
        }
        if self.is_paused() {
            return Err(StartError::Paused);
        }
        let _starting = self.start_lock.lock().await;
        if let Some(r) = self.live() {
            return Ok(r.link.clone());
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
        self.starting.store(true, Ordering::Release);
        let started = self.start(launcher, life).await;
        self.starting.store(false, Ordering::Release);
        match started {
            Ok(started) => {
                let link = started.link.clone();
                self.current.store(Some(Arc::new(started)));
                Ok(link)
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

    /// Stops the sandbox if it is running, idle for the idle timeout and
    /// serving nothing.
    pub async fn stop_if_idle(&self, life: &Lifecycle) {
        let idle_for = self.idle_for();
        if self.in_flight.load(Ordering::Acquire) == 0
            && idle_for >= life.idle_timeout
            && self.is_running()
        {
            self.log
                .host(&format!("stopping after {idle_for:?} without requests"));
            info!(appspace = %self.config.name, "stopping idle appspace");
            self.stop(life.stop_grace).await;
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
        self.link(launcher, life).await.map(drop)
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
        let base = RuntimeInfo {
            requests: self.requests.load(Ordering::Relaxed),
            connections_handed_over: self.links.handed_over.load(Ordering::Relaxed),
            connections_over_channel: self.links.over_channel.load(Ordering::Relaxed),
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
        let _no_start = self.start_lock.lock().await;
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
        if tokio::time::timeout(grace + Duration::from_secs(2), running.handle.closed())
            .await
            .is_err()
        {
            if let Some(pid) = running
                .child_pid
                .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}
