//! Running appspaces: each one's sandbox is started on demand (concurrent
//! first requests share one start), reached over its ds-proto channel, and
//! marked stopped when its sandbox exits so that the next request starts
//! it again.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ds_proto::{Config, ControlMessage, Role, Session, SessionHandle};
use ds_sandbox::cgroup::{Cgroup, CgroupError, Usage};
use ds_sandbox::spec::Runtime;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::app_link::{AppLink, LinkCounters};
use crate::applog::{AppLog, LogLimits};
use crate::egress::rules::Rule;
use crate::egress::{EgressGate, EgressLimits, EgressSink};
use crate::sandbox_spawn::{SandboxFds, SandboxSpawner, Spawned};

/// The longest wait between restarts after repeated crashes.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A sandbox that ran this long before crashing starts its backoff afresh.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// Timing of appspaces' lives.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// How long a sandbox has to report its app ready.
    pub start_timeout: Duration,
    /// A running appspace with no request for this long is stopped.
    pub idle_timeout: Duration,
    /// Between SIGTERM and SIGKILL when stopping.
    pub stop_grace: Duration,
    /// Caps of each appspace's log.
    pub log_limits: LogLimits,
    /// Each appspace's egress limits.
    pub egress: EgressLimits,
    /// Time an app has to start its response (504 beyond).
    pub response_timeout: Duration,
    /// A request or response body that moves no data for this long is
    /// cut off.
    pub body_idle_timeout: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            start_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(300),
            stop_grace: Duration::from_secs(3),
            log_limits: LogLimits::default(),
            egress: EgressLimits::default(),
            response_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What an appspace runs and where its data lives.
#[derive(Debug, Clone)]
pub struct AppspaceConfig {
    /// Its name (the part of its domain before the host's base domain).
    pub name: String,
    /// The domain it is served at.
    pub domain: String,
    /// The installed app version's files.
    pub app_dir: PathBuf,
    /// The appspace's data directory.
    pub data_dir: PathBuf,
    /// Native or Deno.
    pub runtime: Runtime,
    /// The command to run, as seen inside the sandbox.
    pub command: Vec<String>,
    /// Its resource limits when the host starts.
    pub limits: ResourceLimits,
    /// Paused when the host starts.
    pub paused: bool,
    /// Its egress allowlist when the host starts.
    pub egress: Vec<Rule>,
    /// Where the appspace's log files go.
    pub log_dir: PathBuf,
}

/// The cgroup limits an appspace runs under; changes apply to a running
/// sandbox at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceLimits {
    /// Memory in bytes (swap is off).
    pub memory_bytes: u64,
    /// CPU share in cores.
    pub cpus: f64,
    /// Most tasks at once.
    pub pids: u64,
}

impl ResourceLimits {
    fn for_cgroup(&self) -> ds_sandbox::spec::Limits {
        ds_sandbox::spec::Limits {
            memory_bytes: self.memory_bytes,
            cpus: self.cpus,
            pids: self.pids,
            ..ds_sandbox::spec::Limits::default()
        }
    }
}

/// What a running appspace is doing now.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeInfo {
    /// Whether its sandbox is running.
    pub running: bool,
    /// Since when it runs.
    pub uptime: Option<Duration>,
    /// Its cgroup's usage, when running and readable.
    pub usage: Option<Usage>,
    /// Requests answered since the host started.
    pub requests: u64,
    /// Connections to the app handed over by the agent, since the host
    /// started.
    pub connections_handed_over: u64,
    /// Connections to the app made as HTTP streams on the channel.
    pub connections_over_channel: u64,
}

/// How a Deno app is run (before its entrypoint): Deno's permission
/// prompts are moot inside the sandbox, which is the real boundary.
pub const DENO_RUN_ARGS: [&str; 6] = [
    "run",
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--allow-sys",
];

impl AppspaceConfig {
    /// What to run for a recorded appspace: its version's entrypoint (under
    /// Deno for Deno apps), logs next to its data directory.
    pub fn from_record(a: crate::state::AppspaceRecord) -> Self {
        let entry = format!("/app/{}", a.entrypoint);
        let command = match a.runtime {
            Runtime::Native => vec![entry],
            Runtime::Deno => std::iter::once("deno")
                .chain(DENO_RUN_ARGS)
                .map(String::from)
                .chain([entry])
                .collect(),
        };
        let log_dir = a.data_dir.parent().unwrap_or(&a.data_dir).join("log");
        Self {
            name: a.name,
            domain: a.domain.clone(),
            app_dir: a.app_dir,
            data_dir: a.data_dir,
            runtime: a.runtime,
            command,
            limits: ResourceLimits {
                memory_bytes: a.memory_bytes,
                cpus: a.cpus,
                pids: a.pids,
            },
            paused: a.paused,
            egress: a
                .egress
                .iter()
                .filter_map(|e| match e.parse() {
                    Ok(rule) => Some(rule),
                    Err(err) => {
                        warn!(appspace = %a.domain, error = %err, "ignoring a stored egress entry");
                        None
                    }
                })
                .collect(),
            log_dir,
        }
    }
}

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
}

impl Launcher {
    /// A launcher using these binaries.
    pub fn new(sandbox_bin: PathBuf, deno: Option<PathBuf>) -> Self {
        Self {
            spawner: SandboxSpawner::new(sandbox_bin),
            deno,
            egress_sink: None,
        }
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
    handle: SessionHandle,
    link: AppLink,
    child_pid: Option<u32>,
    started: Instant,
    /// Set when we stop it, so that its exit is not taken for a crash.
    stopping: Arc<AtomicBool>,
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
    running: Mutex<Option<Running>>,
    crashes: Arc<std::sync::Mutex<Crashes>>,
    in_flight: AtomicUsize,
    last_used: std::sync::Mutex<Instant>,
    limits: std::sync::Mutex<ResourceLimits>,
    paused: AtomicBool,
    requests: AtomicU64,
    links: Arc<LinkCounters>,
    egress: Arc<EgressGate>,
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
        *self.0.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
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
            running: Mutex::new(None),
            crashes: Arc::default(),
            in_flight: AtomicUsize::new(0),
            last_used: std::sync::Mutex::new(Instant::now()),
            requests: AtomicU64::new(0),
            links: Arc::default(),
            span: tracing::info_span!(parent: None, "appspace", name = config.name.as_str()),
            config,
        })
    }

    /// Its span, the parent of its requests' spans.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        RequestGuard(self.clone())
    }

    /// Whether its sandbox is running now.
    pub async fn is_running(&self) -> bool {
        self.running
            .lock()
            .await
            .as_ref()
            .is_some_and(|r| !r.handle.is_closed())
    }

    /// The way to the running sandbox's app, starting it first if needed.
    /// Concurrent callers share one start.
    pub async fn link(&self, launcher: &Launcher, life: &Lifecycle) -> Result<AppLink, StartError> {
        if self.is_paused() {
            return Err(StartError::Paused);
        }
        let mut running = self.running.lock().await;
        if let Some(r) = running.as_ref() {
            if !r.handle.is_closed() {
                return Ok(r.link.clone());
            }
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
        match self.start(launcher, life).await {
            Ok(started) => {
                let link = started.link.clone();
                *running = Some(started);
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
        let idle_for = self
            .last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if self.in_flight.load(Ordering::Acquire) == 0
            && idle_for >= life.idle_timeout
            && self.is_running().await
        {
            self.log
                .host(&format!("stopping after {idle_for:?} without requests"));
            info!(appspace = %self.config.name, "stopping idle appspace");
            self.stop(life.stop_grace).await;
        }
    }

    async fn start(&self, launcher: &Launcher, life: &Lifecycle) -> Result<Running, StartError> {
        let cfg = &self.config;
        let limits = self.limits();
        let exec_args = |fds: SandboxFds| {
            let mut args: Vec<OsString> = vec![
                "--channel-fd".into(),
                fds.channel.to_string().into(),
                "--handoff-fd".into(),
                fds.handoff.to_string().into(),
                "--app".into(),
                cfg.app_dir.clone().into(),
                "--data".into(),
                cfg.data_dir.clone().into(),
                "--memory".into(),
                limits.memory_bytes.to_string().into(),
                "--cpu".into(),
                limits.cpus.to_string().into(),
                "--pids".into(),
                limits.pids.to_string().into(),
            ];
            if cfg.runtime == Runtime::Deno {
                args.extend(["--runtime".into(), "deno".into()]);
                if let Some(deno) = &launcher.deno {
                    args.extend(["--deno".into(), deno.clone().into()]);
                }
            }
            args.push("--".into());
            args.extend(cfg.command.iter().map(OsString::from));
            args
        };
        let deadline = tokio::time::Instant::now() + life.start_timeout;
        let mut use_spare = true;
        let (mut child, child_pid, session, app_port, handoff) = loop {
            let Spawned {
                mut child,
                channel: ours,
                handoff,
                from_spare,
            } = launcher
                .spawner
                .exec(&exec_args, use_spare)
                .await
                .map_err(StartError::Spawn)?;
            let child_pid = child.id();
            info!(appspace = %cfg.name, pid = ?child_pid, "sandbox started");
            self.log.host("starting the sandbox");
            if let Some(out) = child.stdout.take() {
                self.log.clone().pump(out, "stdout");
            }
            if let Some(err) = child.stderr.take() {
                self.log.clone().pump(err, "stderr");
            }
            // The agent greets first. A waiting launcher that died before it
            // got its arguments (killed by someone, say) shows here: then
            // once more with a launcher started for this start.
            let greeted = tokio::time::timeout_at(
                deadline,
                Session::connect(ours, Role::Host, Config::default()),
            )
            .await;
            let session = match greeted {
                Ok(Ok(session)) => session,
                Ok(Err(e)) if from_spare => {
                    let _ = child.kill().await;
                    self.log.host(&format!(
                        "the waiting launcher ended before its agent greeted ({e}); \
                         once more with a new one"
                    ));
                    use_spare = false;
                    continue;
                }
                Ok(Err(e)) => {
                    let _ = child.kill().await;
                    return Err(e.into());
                }
                Err(_) => {
                    let _ = child.kill().await;
                    return Err(StartError::Timeout(life.start_timeout));
                }
            };
            let ready = async {
                loop {
                    if let ControlMessage::Ready { app_port } = session.recv_control().await? {
                        return Ok::<_, StartError>(app_port);
                    }
                }
            };
            match tokio::time::timeout_at(deadline, ready).await {
                Ok(Ok(app_port)) => {
                    break (child, child_pid, Arc::new(session), app_port, handoff);
                }
                Ok(Err(e)) => {
                    let _ = child.kill().await;
                    return Err(e);
                }
                Err(_) => {
                    let _ = child.kill().await;
                    return Err(StartError::Timeout(life.start_timeout));
                }
            }
        };
        let handle = session.handle();
        let handoff = match ds_proto::Handoff::start(handoff) {
            Ok(handoff) => handoff,
            Err(e) => {
                let _ = child.kill().await;
                return Err(StartError::Spawn(e));
            }
        };
        let link = AppLink::new(
            handle.clone(),
            handoff.clone(),
            app_port,
            self.links.clone(),
        );
        self.log.host("app ready");
        // Egress streams the agent opens: each one checked and spliced.
        let (acceptor, gate, sink, log) = (
            session.clone(),
            self.egress.clone(),
            launcher.egress_sink.clone(),
            self.log.clone(),
        );
        tokio::spawn(async move {
            while let Ok(incoming) = acceptor.accept().await {
                if let ds_proto::Incoming::Egress(req) = incoming {
                    let (gate, sink, log) = (gate.clone(), sink.clone(), log.clone());
                    tokio::spawn(gate.handle(req, sink, log, Some(handoff.clone())));
                }
            }
        });
        // When the sandbox exits, its channel is closed and the next
        // request starts a new one; an exit we did not ask for is a crash.
        let name = cfg.name.clone();
        let watch = handle.clone();
        let stopping = Arc::new(AtomicBool::new(false));
        let (log, crashes, stop_flag) = (self.log.clone(), self.crashes.clone(), stopping.clone());
        let started = Instant::now();
        tokio::spawn(async move {
            let status = child.wait().await;
            watch.close();
            let status = status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            if stop_flag.load(Ordering::Acquire) {
                log.host(&format!("sandbox stopped ({status})"));
            } else {
                let delay = record_crash(
                    &crashes,
                    format!("the sandbox exited: {status}"),
                    started.elapsed(),
                );
                warn!(appspace = %name, %status, "sandbox crashed");
                log.host(&format!(
                    "sandbox crashed ({status}); next start in {delay:?} at the earliest"
                ));
            }
        });
        Ok(Running {
            _session: session,
            handle,
            link,
            child_pid,
            started,
            stopping,
        })
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

    /// The cgroup of the running sandbox: the launcher names it after its
    /// own pid.
    fn cgroup(running: &Running) -> Option<Cgroup> {
        Cgroup::open(&format!("exec-{}", running.child_pid?)).ok()
    }

    /// Changes the limits; a running sandbox's cgroup is changed at once.
    /// Returns whether a running sandbox was changed.
    pub async fn set_limits(&self, limits: ResourceLimits) -> Result<bool, CgroupError> {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
        let running = self.running.lock().await;
        let Some(cgroup) = running
            .as_ref()
            .filter(|r| !r.handle.is_closed())
            .and_then(Self::cgroup)
        else {
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

    /// What it is doing now.
    pub async fn runtime(&self) -> RuntimeInfo {
        let base = RuntimeInfo {
            requests: self.requests.load(Ordering::Relaxed),
            connections_handed_over: self.links.handed_over.load(Ordering::Relaxed),
            connections_over_channel: self.links.over_channel.load(Ordering::Relaxed),
            ..RuntimeInfo::default()
        };
        let running = self.running.lock().await;
        match running.as_ref().filter(|r| !r.handle.is_closed()) {
            Some(r) => RuntimeInfo {
                running: true,
                uptime: Some(r.started.elapsed()),
                usage: Self::cgroup(r).map(|c| c.usage()),
                ..base
            },
            None => base,
        }
    }

    /// Asks a running sandbox to stop (SIGTERM to the app, SIGKILL after
    /// `grace`) and waits until its channel closes.
    pub async fn stop(&self, grace: Duration) {
        let Some(running) = self.running.lock().await.take() else {
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
