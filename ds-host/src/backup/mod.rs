//! Backups taken by the host, never by the app (docs/backups.md): each
//! appspace's data directory goes into one restic repository under the
//! state directory, which only root can read (the appspaces' uids cannot
//! reach it), encrypted with a key made at the first backup. The format is
//! restic's own, so Debian's stock `restic` lists and restores it without
//! ds ([`restic`]).
//!
//! Consistency: a running sandbox is frozen (cgroup v2 freezer) while its
//! data is read and thawed after; on cgroup v1 (no freezer among ds's
//! controllers) it is stopped instead and kept from starting until the
//! backup is done; its next request starts it.

pub mod export;
mod host_state;
pub mod restic;
pub mod target;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::appspace::Appspace;
pub use host_state::{restore_host, HostRestored};
pub use restic::{recover_swap, BackupError, HostSnapshot, Labels, Snapshot};
pub use target::{SftpTarget, SshAccess, Target, TargetError};

/// The labels of a backup of `appspace` now.
pub fn labels<'a>(appspace: &'a Appspace, reason: Option<&'static str>) -> Labels<'a> {
    Labels {
        appspace: &appspace.config.name,
        app: &appspace.config.app,
        version: &appspace.config.version,
        reason,
    }
}

/// When appspaces are backed up by themselves, and what is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Between an appspace's scheduled backups (`None`: on demand only).
    pub every: Option<std::time::Duration>,
    /// restic's `--keep-hourly`, `--keep-daily`, `--keep-weekly`,
    /// `--keep-monthly`.
    pub keep: [u32; 4],
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            every: None,
            keep: [24, 7, 4, 12],
        }
    }
}

/// One appspace's outcome in a scheduled run.
#[derive(Debug)]
pub struct DueOutcome {
    /// The appspace.
    pub appspace: String,
    /// Its new backup, or why there is none.
    pub result: Result<Snapshot, String>,
}

/// The host's backups.
#[derive(Debug)]
pub struct Backups {
    restic: restic::Restic,
    schedule: Schedule,
    /// Per appspace: since when it has lacked a successful backup (its
    /// newest one's time, or when the schedule first found it due), as
    /// of the last scheduled run; and whether an alert was sent for it.
    lacking: std::sync::Mutex<std::collections::HashMap<String, (std::time::SystemTime, bool)>>,
    /// Appspaces overdue as of the last scheduled run.
    overdue: std::sync::Mutex<Vec<String>>,
    /// Run with each alert on its stdin.
    notify: Option<PathBuf>,
    /// Serialises backups (restic locks the repository anyway; this keeps
    /// a second admin's request waiting rather than failing).
    one_at_a_time: tokio::sync::Mutex<()>,
    /// The state directory, and the backups directory in it.
    state_dir: PathBuf,
    dir: PathBuf,
    /// What the host's own state is, once told.
    host_state: Option<HostState>,
}

/// The host's own state, backed up with its appspaces.
#[derive(Debug)]
struct HostState {
    state: Arc<crate::state::State>,
    /// Files outside the state directory: the configuration and the
    /// certificate and key it names.
    files: Vec<PathBuf>,
}

impl Backups {
    /// Backups under `state_dir/backups`, made with the `restic` binary
    /// (`$DS_RESTIC`, else the PATH's).
    pub fn new(state_dir: &Path, schedule: Schedule) -> Self {
        let binary = std::env::var_os("DS_RESTIC")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("restic"));
        Self {
            restic: restic::Restic::new(binary, state_dir.join("backups"), None, None),
            schedule,
            lacking: std::sync::Mutex::default(),
            overdue: std::sync::Mutex::default(),
            notify: None,
            one_at_a_time: tokio::sync::Mutex::new(()),
            state_dir: state_dir.to_owned(),
            dir: state_dir.join("backups"),
            host_state: None,
        }
    }

    /// The repository at `repository` instead of in the state directory
    /// (a USB disk, an NFS mount, an SFTP server reached with `ssh`:
    /// somewhere a dead disk does not take along).
    pub fn with_repository(
        mut self,
        repository: Option<Target>,
        ssh: Option<SshAccess>,
    ) -> Result<Self, TargetError> {
        if let Some(t) = &repository {
            t.check_access(ssh.as_ref())?;
        }
        let binary = self.restic.binary().to_owned();
        self.restic = restic::Restic::new(binary, self.dir.clone(), repository, ssh);
        Ok(self)
    }

    /// The host's own state is backed up too: `state`'s database, the
    /// installed apps, and `files` (the configuration and what it names).
    pub fn with_host_state(mut self, state: Arc<crate::state::State>, files: Vec<PathBuf>) -> Self {
        self.host_state = Some(HostState { state, files });
        self
    }

    /// The repository's key (made now if there is none yet), for the
    /// admin to keep off the machine.
    pub async fn key(&self) -> Result<String, BackupError> {
        let _one = self.one_at_a_time.lock().await;
        self.restic.ensure_repository().await?;
        let file = self.restic.key_file();
        std::fs::read_to_string(&file).map_err(|source| BackupError::Io {
            what: "reading",
            path: file,
            source,
        })
    }

    /// The backups of the host's own state, oldest first.
    pub async fn list_host(&self) -> Result<Vec<HostSnapshot>, BackupError> {
        if !self.restic.exists().await? {
            return Ok(Vec::new());
        }
        self.restic.host_snapshots().await
    }

    /// Where the repository is and the file holding its key.
    pub fn location(&self) -> (String, PathBuf) {
        (self.restic.repository().to_string(), self.restic.key_file())
    }

    /// Backs up `appspace`'s data now: frozen while it is read (stopped on
    /// cgroup v1). Returns the snapshot and how the app was held still.
    pub async fn create(
        &self,
        appspace: &Arc<Appspace>,
        grace: std::time::Duration,
    ) -> Result<(Snapshot, &'static str), BackupError> {
        let _one = self.one_at_a_time.lock().await;
        self.create_locked(appspace, grace, None).await
    }

    /// [`Backups::create`] with the lock held, the snapshot dated `at`
    /// (now if `None`).
    async fn create_locked(
        &self,
        appspace: &Arc<Appspace>,
        grace: std::time::Duration,
        at: Option<std::time::SystemTime>,
    ) -> Result<(Snapshot, &'static str), BackupError> {
        self.restic.ensure_repository().await?;
        let (name, data) = (&appspace.config.name, &appspace.config.data_dir);
        let labels = labels(appspace, None);
        match appspace.freeze(true).await {
            Ok(true) => {
                let taken = self.restic.backup_at(&labels, data, at).await;
                if let Err(e) = appspace.freeze(false).await {
                    tracing::error!(appspace = %name, error = %e, "thawing after the backup");
                }
                Ok((taken?, "frozen"))
            }
            // No freezer (cgroup v1), or not running: out of service while
            // read, so that nothing starts and writes meanwhile.
            Ok(false) => {
                let (was_running, taken) = appspace
                    .out_of_service(
                        grace,
                        "its data is being backed up",
                        self.restic.backup_at(&labels, data, at),
                    )
                    .await;
                Ok((
                    taken?,
                    if was_running {
                        "stopped"
                    } else {
                        "not running"
                    },
                ))
            }
            Err(e) => Err(BackupError::Freeze(e.to_string())),
        }
    }

    /// Reads every backup back and checks its integrity; a repository that
    /// does not exist yet is fine (nothing to check).
    pub async fn verify(&self) -> Result<usize, BackupError> {
        let _one = self.one_at_a_time.lock().await;
        if !self.restic.exists().await? {
            return Ok(0);
        }
        self.restic.check().await?;
        Ok(self.restic.snapshots(None).await?.len())
    }

    /// The snapshots of `appspace` (every appspace's if `None`), oldest
    /// first.
    pub async fn list(&self, appspace: Option<&str>) -> Result<Vec<Snapshot>, BackupError> {
        if !self.restic.exists().await? {
            return Ok(Vec::new());
        }
        self.restic.snapshots(appspace).await
    }
}

impl Backups {
    /// Puts the data of `snapshot` back into `appspace`'s data directory:
    /// the appspace is taken out of service, its current data backed up
    /// first (so nothing is lost), the snapshot restored beside it and
    /// checked, then swapped in; its next start hands the files to its
    /// uid. Returns the backup of the data it replaced.
    pub async fn restore(
        &self,
        appspace: &Arc<Appspace>,
        snapshot: &str,
        grace: std::time::Duration,
    ) -> Result<Snapshot, BackupError> {
        let _one = self.one_at_a_time.lock().await;
        let name = &appspace.config.name;
        let wanted = self
            .list(Some(name))
            .await?
            .into_iter()
            .find(|s| s.id == snapshot)
            .ok_or_else(|| BackupError::NoSuchSnapshot {
                snapshot: snapshot.to_owned(),
                appspace: name.clone(),
            })?;
        let data = appspace.config.data_dir.clone();
        appspace
            .out_of_service(grace, "its data is being restored", async {
                let labels = labels(appspace, Some("pre-restore"));
                let safety = self.restic.backup_at(&labels, &data, None).await?;
                let staging = self.restic.restore_beside(&wanted, &data).await?;
                restic::swap_in(&staging, &data)?;
                Ok(safety)
            })
            .await
            .1
    }
}

/// Held while a backup operation runs (see [`Backups::exclusive`]).
pub type Exclusive<'a> = tokio::sync::MutexGuard<'a, ()>;

impl Backups {
    /// Waits until no other backup operation runs and keeps others
    /// waiting until the guard is dropped: an upgrade holds it from its
    /// backup to its outcome. Take it before taking an appspace out of
    /// service (as restores do), never after.
    pub async fn exclusive(&self) -> Exclusive<'_> {
        self.one_at_a_time.lock().await
    }

    /// Backs up the data of `appspace`, which is not running (out of
    /// service), labelled `reason`.
    pub async fn backup_still(
        &self,
        _held: &Exclusive<'_>,
        appspace: &Appspace,
        reason: &'static str,
    ) -> Result<Snapshot, BackupError> {
        self.restic.ensure_repository().await?;
        self.restic
            .backup_at(
                &labels(appspace, Some(reason)),
                &appspace.config.data_dir,
                None,
            )
            .await
    }

    /// Puts the data of `snapshot` back into `data` (checked, renamed in;
    /// what was there is dropped: the caller has it backed up, or it is
    /// what a failed change left).
    pub async fn put_back(
        &self,
        _held: &Exclusive<'_>,
        snapshot: &Snapshot,
        data: &Path,
    ) -> Result<(), BackupError> {
        let staging = self.restic.restore_beside(snapshot, data).await?;
        restic::swap_in(&staging, data)
    }

    /// Deletes backup `id` of `appspace` and the data only it held.
    pub async fn delete(&self, appspace: &str, id: &str) -> Result<Snapshot, BackupError> {
        let _one = self.one_at_a_time.lock().await;
        let doomed = self.find(appspace, id).await?;
        self.restic.forget_one(&doomed.id).await?;
        Ok(doomed)
    }

    /// `restic dump` of `snapshot` (see [`restic::Restic::dump`]).
    pub fn dump(&self, snapshot: &Snapshot) -> Result<tokio::process::Child, BackupError> {
        self.restic.dump(snapshot)
    }

    /// The snapshot `id` of `appspace`.
    pub async fn find(&self, appspace: &str, id: &str) -> Result<Snapshot, BackupError> {
        self.list(Some(appspace))
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| BackupError::NoSuchSnapshot {
                snapshot: id.to_owned(),
                appspace: appspace.to_owned(),
            })
    }
}

impl Backups {
    /// The schedule in force.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// Backs up every appspace whose newest backup is at least the
    /// schedule's interval older than `now` (or that has none), dated
    /// `now`, then applies the retention to it. `now` is the clock's time
    /// for the scheduler and any time for `dsctl backup run-due --now`, so
    /// schedules and retention are testable without waiting.
    pub async fn run_due(
        &self,
        appspaces: &[Arc<Appspace>],
        now: std::time::SystemTime,
        grace: std::time::Duration,
    ) -> Result<Vec<DueOutcome>, BackupError> {
        let Some(every) = self.schedule.every else {
            return Ok(Vec::new());
        };
        let _one = self.one_at_a_time.lock().await;
        let taken = if self.restic.exists().await? {
            self.restic.snapshots(None).await?
        } else {
            Vec::new()
        };
        let mut outcomes = Vec::new();
        for appspace in appspaces {
            if appspace.config.broken.is_some() {
                continue;
            }
            let name = &appspace.config.name;
            let newest = taken
                .iter()
                .filter(|s| &s.appspace == name)
                .filter_map(|s| humantime::parse_rfc3339_weak(&s.time).ok())
                .max();
            let due = newest.is_none_or(|t| now.duration_since(t).is_ok_and(|age| age >= every));
            if !due {
                continue;
            }
            let mut result = match self.create_locked(appspace, grace, Some(now)).await {
                Ok((snapshot, _)) => match self.restic.forget(name, self.schedule.keep).await {
                    Ok(()) => Ok(snapshot),
                    Err(e) => Err(format!(
                        "backed up as {}, but the retention failed: {e}",
                        snapshot.id
                    )),
                },
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = &result {
                tracing::warn!(appspace = %name, error = %e, "scheduled backup failed");
                appspace.log_host(&format!("scheduled backup failed: {e}"));
            }
            if let Some(since) = self.record(name, newest, result.is_ok(), now) {
                let error = result.as_ref().err().cloned().unwrap_or_default();
                appspace
                    .log_host("ALERT: no successful backup for longer than the schedule allows");
                self.alert(serde_json::json!({
                    "alert": "backup_overdue",
                    "appspace": name,
                    "lacking_since": humantime::format_rfc3339_seconds(since).to_string(),
                    "as_of": humantime::format_rfc3339_seconds(now).to_string(),
                    "error": error,
                }));
                if let Err(e) = &mut result {
                    e.push_str(" (overdue: alert sent)");
                }
            }
            outcomes.push(DueOutcome {
                appspace: name.clone(),
                result,
            });
        }
        self.refresh_overdue(now);
        // The host's own state goes with every run that backed anything
        // up (its database records what the appspaces' backups restore
        // into).
        if self.host_state.is_some() && outcomes.iter().any(|o| o.result.is_ok()) {
            if let Err(e) = self.backup_host_locked().await {
                tracing::warn!(error = %e, "backing up the host's state");
            }
        }
        Ok(outcomes)
    }
}

/// How often the scheduler looks for appspaces due a backup.
const SCHEDULER_TICK: std::time::Duration = std::time::Duration::from_secs(60);

impl Backups {
    /// Runs the schedule: every minute, the appspaces due a backup get
    /// one (nothing when the schedule is on demand only).
    pub fn spawn_scheduler(self: Arc<Self>, host: Arc<crate::host::Host>) {
        if self.schedule.every.is_none() {
            return;
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SCHEDULER_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !host.is_stopping() {
                tick.tick().await;
                let now = std::time::SystemTime::now();
                if let Err(e) = self
                    .run_due(&host.all(), now, host.lifecycle.stop_grace)
                    .await
                {
                    tracing::warn!(error = %e, "scheduled backups");
                }
            }
        });
    }
}

impl Backups {
    /// Alerts go to `command` (with the alert as JSON on its stdin).
    pub fn with_notify(mut self, command: Option<PathBuf>) -> Self {
        self.notify = command;
        self
    }

    /// Appspaces without a successful backup for longer than twice the
    /// interval, as of the last scheduled run.
    pub fn overdue(&self) -> Vec<String> {
        self.overdue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the outcome for `name` as of `now` and says whether it has
    /// just become overdue (an alert is due, once per lapse).
    fn record(
        &self,
        name: &str,
        newest: Option<std::time::SystemTime>,
        ok: bool,
        now: std::time::SystemTime,
    ) -> Option<std::time::SystemTime> {
        let every = self.schedule.every?;
        let mut lacking = self.lacking.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            lacking.remove(name);
            return None;
        }
        let since = newest.unwrap_or(now);
        let entry = lacking.entry(name.to_owned()).or_insert((since, false));
        let overdue = now.duration_since(entry.0).is_ok_and(|d| d > every * 2);
        if overdue && !entry.1 {
            entry.1 = true;
            return Some(entry.0);
        }
        None
    }

    fn refresh_overdue(&self, now: std::time::SystemTime) {
        let Some(every) = self.schedule.every else {
            return;
        };
        let lacking = self.lacking.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = lacking
            .iter()
            .filter(|(_, (since, _))| now.duration_since(*since).is_ok_and(|d| d > every * 2))
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        *self.overdue.lock().unwrap_or_else(|p| p.into_inner()) = names;
    }

    /// Sends an alert: logged, and given to the notify command if any
    /// (which runs detached; its failure is logged).
    fn alert(&self, alert: serde_json::Value) {
        tracing::error!(alert = %alert, "alert");
        let Some(command) = self.notify.clone() else {
            return;
        };
        tokio::spawn(async move {
            let child = tokio::process::Command::new(&command)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(command = %command.display(), error = %e, "the notify command");
                    return;
                }
            };
            if let Some(mut stdin) = child.stdin.take() {
                use tokio::io::AsyncWriteExt;
                let _ = stdin.write_all(format!("{alert}\n").as_bytes()).await;
            }
            match child.wait().await {
                Ok(status) if status.success() => {}
                Ok(status) => {
                    tracing::warn!(command = %command.display(), %status, "the notify command failed")
                }
                Err(e) => {
                    tracing::warn!(command = %command.display(), error = %e, "the notify command")
                }
            }
        });
    }
}
