//! Running appspaces: each one's sandbox is started on demand (concurrent
//! first requests share one start), reached over its ds-proto channel, and
//! marked stopped when its sandbox exits so that the next request starts
//! it again.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use ds_proto::{Config, ControlMessage, Role, Session, SessionHandle};
use ds_sandbox::spec::Runtime;
use tokio::sync::Mutex;
use tracing::{info, warn};

/// How long a sandbox has to report its app ready.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What an appspace runs and where its data lives.
#[derive(Debug, Clone)]
pub struct AppspaceConfig {
    /// Its name, also the first label of its domain (`<name>.localhost`).
    pub name: String,
    /// The installed app version's files.
    pub app_dir: PathBuf,
    /// The appspace's data directory.
    pub data_dir: PathBuf,
    /// Native or Deno.
    pub runtime: Runtime,
    /// The command to run, as seen inside the sandbox.
    pub command: Vec<String>,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
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
}

/// How sandboxes are started on this host.
#[derive(Debug)]
pub struct Launcher {
    /// The `ds-sandbox` binary.
    pub sandbox_bin: PathBuf,
    /// The Deno binary, for Deno apps.
    pub deno: Option<PathBuf>,
    /// Serializes spawns: the child's channel end is briefly inheritable,
    /// and no other spawn may pick it up.
    spawn_lock: std::sync::Mutex<()>,
}

impl Launcher {
    /// A launcher using these binaries.
    pub fn new(sandbox_bin: PathBuf, deno: Option<PathBuf>) -> Self {
        Self {
            sandbox_bin,
            deno,
            spawn_lock: std::sync::Mutex::new(()),
        }
    }
}

struct Running {
    /// Kept so that the channel's receiving half lives as long as we use it.
    _session: Arc<Session>,
    handle: SessionHandle,
    child_pid: Option<u32>,
}

/// One appspace and, when running, its sandbox.
pub struct Appspace {
    /// Its configuration.
    pub config: AppspaceConfig,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for Appspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appspace")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Appspace {
    /// A stopped appspace.
    pub fn new(config: AppspaceConfig) -> Self {
        Self {
            config,
            running: Mutex::new(None),
        }
    }

    /// The channel of the running sandbox, starting it first if needed.
    pub async fn channel(&self, launcher: &Launcher) -> Result<SessionHandle, StartError> {
        let mut running = self.running.lock().await;
        if let Some(r) = running.as_ref() {
            if !r.handle.is_closed() {
                return Ok(r.handle.clone());
            }
        }
        let started = self.start(launcher).await?;
        let handle = started.handle.clone();
        *running = Some(started);
        Ok(handle)
    }

    async fn start(&self, launcher: &Launcher) -> Result<Running, StartError> {
        let cfg = &self.config;
        let (ours, theirs) = UnixStream::pair().map_err(StartError::Spawn)?;
        let mut cmd = tokio::process::Command::new(&launcher.sandbox_bin);
        cmd.arg("exec")
            .arg("--channel-fd")
            .arg(theirs.as_raw_fd().to_string())
            .arg("--app")
            .arg(&cfg.app_dir)
            .arg("--data")
            .arg(&cfg.data_dir)
            .arg("--memory")
            .arg(cfg.memory_bytes.to_string());
        if cfg.runtime == Runtime::Deno {
            cmd.args(["--runtime", "deno"]);
            if let Some(deno) = &launcher.deno {
                cmd.arg("--deno").arg(deno);
            }
        }
        cmd.arg("--")
            .args(&cfg.command)
            .stdin(Stdio::null())
            .kill_on_drop(false);
        let mut child = {
            let _only_spawn = launcher
                .spawn_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())
                .map_err(|e| StartError::Spawn(e.into()))?;
            cmd.spawn().map_err(StartError::Spawn)?
        };
        drop(theirs);
        let child_pid = child.id();
        info!(appspace = %cfg.name, pid = ?child_pid, "sandbox started");

        let ready = async {
            let session = Session::connect(ours, Role::Host, Config::default()).await?;
            loop {
                if let ControlMessage::Ready { .. } = session.recv_control().await? {
                    return Ok::<_, StartError>(session);
                }
            }
        };
        let session = match tokio::time::timeout(START_TIMEOUT, ready).await {
            Ok(Ok(session)) => Arc::new(session),
            Ok(Err(e)) => {
                let _ = child.kill().await;
                return Err(e);
            }
            Err(_) => {
                let _ = child.kill().await;
                return Err(StartError::Timeout(START_TIMEOUT));
            }
        };
        let handle = session.handle();
        // When the sandbox exits, its channel is closed: the next request
        // starts a new one.
        let name = cfg.name.clone();
        let watch = handle.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            warn!(appspace = %name, ?status, "sandbox exited");
            watch.close();
        });
        Ok(Running {
            _session: session,
            handle,
            child_pid,
        })
    }

    /// Asks a running sandbox to stop (SIGTERM to the app, SIGKILL after
    /// `grace`) and waits until its channel closes.
    pub async fn stop(&self, grace: Duration) {
        let Some(running) = self.running.lock().await.take() else {
            return;
        };
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
