//! The admin API's JSON bodies, shared by `ds-host` (which serves them)
//! and `dsctl` (which reads them). Paths, all under `/v1`:
//!
//! | method and path | body in | answer |
//! |---|---|---|
//! | `GET /status` | | [`Status`] |
//! | `GET /apps` | | `[App]` |
//! | `POST /apps` | the package as `.tar.gz` bytes | [`Installed`] |
//! | `GET /apps/{name}` | | [`App`] |
//! | `DELETE /apps/{name}[?version=V]` | | [`Removed`] |
//! | `GET /appspaces` | | `[Appspace]` |
//! | `POST /appspaces` | [`CreateAppspace`] | [`Appspace`] |
//! | `GET /appspaces/{key}` | | [`Appspace`] |
//! | `POST /appspaces/{key}/{start,stop,pause,resume}` | | [`Appspace`] |
//! | `GET /appspaces/{key}/limits` | | [`Limits`] |
//! | `PUT /appspaces/{key}/limits` | [`LimitsChange`] | [`LimitsApplied`] |
//! | `GET /appspaces/{key}/logs?lines=N[&follow=true]` | | text, streamed when following |
//! | `DELETE /appspaces/{key}[?purge=true]` | | [`Deleted`] |
//! | `GET /appspaces/{key}/egress` | | [`Egress`] |
//! | `POST /appspaces/{key}/egress/{allow,deny}` | [`EgressChange`] | [`Egress`] |
//! | `GET /appspaces/{key}/egress/log?lines=N` | | `[EgressLogEntry]` |
//! | `GET /audit[?since=UNIX_SECONDS]` | | `[AuditEntry]` |
//!
//! `{key}` is an appspace's domain or name. Every error is an
//! [`ErrorBody`] with a stable [`ErrorCode`].

use serde::{Deserialize, Serialize};

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

/// A machine-readable code and a one-line message for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable across versions; scripts match on it.
    pub code: ErrorCode,
    /// What went wrong, in one line.
    pub message: String,
}

/// The stable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No such app, version or appspace.
    NotFound,
    /// A name or domain is taken, or something still uses what would go.
    Conflict,
    /// The request's arguments are malformed or out of range.
    Invalid,
    /// The package was refused.
    BadPackage,
    /// The body is larger than allowed.
    TooLarge,
    /// The peer may not use the admin API.
    Forbidden,
    /// The appspace could not be started.
    Unavailable,
    /// The host failed; see its log.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is sent with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::Invalid | Self::BadPackage => 400,
            Self::TooLarge => 413,
            Self::Forbidden => 403,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The host's version.
    pub version: String,
    /// `dev` or `production`.
    pub mode: String,
    /// Seconds since the host started.
    pub uptime_secs: u64,
    /// `v1`, `v2`, or `unavailable`.
    pub cgroup: String,
    /// Where sandbox cgroups go, inside each hierarchy: the service's
    /// delegated `.../appspaces` under systemd, else `ds/host-<pid>`.
    #[serde(default)]
    pub cgroup_parent: String,
    /// The kernel's Landlock ABI (0 when absent).
    pub landlock_abi: i32,
    /// Appspaces live at `<name>.<base_domain>`.
    pub base_domain: String,
    /// Installed apps.
    pub apps: u64,
    /// Installed versions.
    pub versions: u64,
    /// Appspaces.
    pub appspaces: u64,
    /// Running sandboxes.
    pub running: u64,
    /// Paused appspaces.
    pub paused: u64,
    /// The privileged supervisor (this answer's sender).
    #[serde(default)]
    pub supervisor: Option<ProcessInfo>,
    /// The unprivileged front door, while it runs.
    #[serde(default)]
    pub front_door: Option<ProcessInfo>,
    /// Times the front door was restarted.
    #[serde(default)]
    pub front_door_restarts: u32,
    /// Appspaces without a successful backup for longer than twice the
    /// schedule's interval.
    #[serde(default)]
    pub backups_overdue: Vec<String>,
    /// How appspaces' disk limits are enforced: `project quota`, `disk
    /// image`, or `none (why)`.
    #[serde(default)]
    pub disk_quota: String,
}

/// One of ds-host's processes and the confinement it runs under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: u32,
    /// Its uid.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
    /// The Landlock ABI it is confined at (0: none).
    pub landlock_abi: i32,
    /// Its seccomp phase (0: none; 1: the steady-state allow-list).
    pub seccomp_phase: u8,
}

/// An app and its versions, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    /// Its name.
    pub name: String,
    /// Installed versions.
    pub versions: Vec<AppVersion>,
}

/// One installed version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppVersion {
    /// Semver.
    pub version: String,
    /// `native` or `deno`.
    pub runtime: String,
    /// Entrypoint inside the package.
    pub entrypoint: String,
    /// Memory the manifest asks for.
    pub memory_bytes: Option<u64>,
    /// Unix seconds.
    pub installed_at: i64,
    /// Appspaces running it.
    pub appspaces: Vec<String>,
}

/// `POST /v1/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Installed {
    /// The app.
    pub name: String,
    /// The version installed.
    pub version: String,
    /// Its runtime.
    pub runtime: String,
    /// Hosts it asks to reach: shown to the admin, granted only by
    /// `appspace create --grant-egress` or `appspace egress allow`.
    #[serde(default)]
    pub egress_requested: Vec<EgressRequest>,
    /// Memory it asks for (a new appspace's limit).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Disk it asks for (a new appspace's limit).
    #[serde(default)]
    pub disk_bytes: Option<u64>,
}

/// A host an app's manifest asks to reach, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRequest {
    /// An allowlist entry: `host`, `*.suffix`, with an optional `:port`.
    pub host: String,
    /// The author's reason, if given.
    pub reason: Option<String>,
}

/// `DELETE /v1/apps/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    /// The app.
    pub name: String,
    /// The versions removed.
    pub versions: Vec<String>,
}

/// `POST /v1/appspaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAppspace {
    /// The app to run.
    pub app: String,
    /// Its version (the newest installed when absent).
    pub version: Option<String>,
    /// The domain to serve it at, under the host's base domain.
    pub domain: String,
    /// Put the hosts its version's manifest asks to reach on its egress
    /// allowlist (never done without this).
    #[serde(default)]
    pub grant_egress: bool,
}

/// An appspace as the admin sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Appspace {
    /// Its name.
    pub name: String,
    /// Its domain.
    pub domain: String,
    /// The app.
    pub app: String,
    /// The version.
    pub version: String,
    /// `running`, `starting`, `stopped`, `paused` or `broken`.
    pub status: String,
    /// Its limits.
    pub limits: Limits,
    /// Its data directory on the host.
    pub data_dir: String,
    /// Its own host uid and gid (the sandbox runs as it when the host is
    /// root).
    #[serde(default)]
    pub host_uid: u32,
    /// Why it cannot run, when it is broken; the host keeps it as it is
    /// until an admin repairs (reinstalls its version) or deletes it.
    #[serde(default)]
    pub broken: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Seconds its sandbox has run, when running.
    pub uptime_secs: Option<u64>,
    /// Requests served since the host started.
    pub requests: u64,
    /// Connections to the app the agent handed over (the host then talks
    /// to the app directly), since the host started.
    #[serde(default)]
    pub connections_handed_over: u64,
    /// Connections to the app the front door asked for and did not get
    /// (the app did not accept, or the agent sent a bad one).
    #[serde(default)]
    pub connections_refused: u64,
    /// The cgroup's usage, when running.
    pub usage: Option<Usage>,
    /// Its data on disk: limit and use.
    #[serde(default)]
    pub disk: Option<Disk>,
    /// Hosts its version's manifest asks to reach that its allowlist does
    /// not grant (`appspace egress allow` grants them).
    #[serde(default)]
    pub egress_not_granted: Vec<EgressRequest>,
}

/// An appspace's resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// CPU share in cores.
    pub cpus: f64,
    /// Most tasks.
    pub pids: u64,
    /// Disk space for its data, in bytes, as the kernel enforces it (0:
    /// none).
    #[serde(default)]
    pub disk_bytes: u64,
}

/// An appspace's data on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// What holds it to its limit: `project quota` (the file system's
    /// project quotas), `disk image` (a file system of its own, in an
    /// image file), or `none` (not enforced; `dsctl status` says why).
    pub enforced_by: String,
    /// The limit in bytes (0: none).
    pub limit_bytes: u64,
    /// Bytes in use, when the host can tell cheaply (the quota's count,
    /// or the image's file system).
    pub used_bytes: Option<u64>,
}

/// What `POST /v1/backups/import?domain=D` made of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Imported {
    /// The new appspace.
    pub appspace: Appspace,
    /// Whether its app version was installed by the import (else it was
    /// installed already and is used as it is).
    pub app_installed: bool,
    /// The domain it had where it was exported.
    pub from_domain: String,
    /// When it was exported (Unix time).
    pub exported_at: i64,
    /// Files, directories and links in its data.
    pub entries: u64,
    /// Bytes of file contents in its data.
    pub bytes: u64,
    /// Egress it was allowed where it came from: not granted by the
    /// import (`dsctl appspace egress allow` grants it).
    pub egress_not_granted: Vec<String>,
}

/// An appspace's use of resources in one hour (docs/usage.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageHour {
    /// The hour's first second, Unix time (UTC).
    pub hour: i64,
    /// CPU time used in it, milliseconds (every sandbox that ran in it).
    pub cpu_ms: u64,
    /// The highest memory use seen in it, bytes.
    pub memory_peak_bytes: u64,
    /// The most disk used seen in it, bytes (absent for an appspace
    /// without a disk limit: nothing measures it).
    pub disk_bytes: Option<u64>,
    /// Requests served in it.
    pub requests: u64,
    /// Egress bytes (out and in) of connections that closed in it.
    pub egress_bytes: u64,
}

/// An appspace's usage history: `GET /v1/appspaces/{key}/usage?since=T`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageHistory {
    /// The appspace's domain.
    pub domain: String,
    /// From the hour holding this time (Unix time) on.
    pub since: i64,
    /// Hours with any use, oldest first; hours with none are left out.
    pub hours: Vec<UsageHour>,
}

/// A running sandbox's usage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Memory now.
    pub memory_bytes: u64,
    /// Highest memory.
    pub memory_peak_bytes: u64,
    /// CPU time, milliseconds.
    pub cpu_ms: u64,
    /// Tasks now.
    pub pids: u64,
    /// OOM kills.
    pub oom_kills: u64,
}

/// `PUT /v1/appspaces/{key}/limits`: absent fields keep their value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsChange {
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU share in cores.
    pub cpus: Option<f64>,
    /// Most tasks.
    pub pids: Option<u64>,
    /// Disk space for its data, in bytes.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
}

/// The answer to a limits change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LimitsApplied {
    /// The limits now.
    pub limits: Limits,
    /// Whether a running sandbox was changed at once.
    pub applied_live: bool,
}

/// One backup (a restic snapshot) of an appspace's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// Its id (restic's short id).
    pub id: String,
    /// The appspace.
    pub appspace: String,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// The data directory it holds.
    pub path: String,
    /// The app the appspace ran when it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The version it ran (a restore brings it back with the data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why it was taken, when not on demand or by the schedule:
    /// `pre-upgrade`, `pre-restore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET`/`POST /v1/backups/host`: a backup of the host's own state (its
/// database, installed apps, configuration and certificate files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBackup {
    /// Its id (restic's short id).
    pub id: String,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// What it holds.
    pub paths: Vec<String>,
}

/// `POST /v1/appspaces/{key}/upgrade`: the version to move to (up or down).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upgrade {
    /// The installed version to move to.
    pub version: String,
}

/// `POST /v1/appspaces/{key}/upgrade`: a finished move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upgraded {
    /// The appspace.
    pub appspace: String,
    /// The version it left.
    pub from: String,
    /// The version it runs now.
    pub to: String,
    /// The backup of its data taken before.
    pub backup: String,
    /// The data schemas migrated from and to, if a migration ran.
    pub migrated: Option<(u32, u32)>,
    /// What its health path answered.
    pub health_status: u16,
}

/// `POST /v1/appspaces/{key}/backups`: the backup taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupTaken {
    /// It.
    pub backup: Backup,
    /// How the app was held still: `frozen`, `stopped` or `not running`.
    pub held: String,
    /// The repository (readable with restic and the key file).
    pub repository: String,
    /// The file holding the repository's key (root only).
    pub key_file: String,
}

/// `GET /v1/backups/key`: the repository's key (root only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupKey {
    /// The key (what restic's `--password-file` holds).
    pub key: String,
    /// The repository it opens.
    pub repository: String,
}

/// `POST /v1/backups/run-due`: run the schedule as if it were `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDue {
    /// The time to act as of (Unix seconds); the clock's when absent.
    pub now: Option<i64>,
}

/// One appspace's outcome of a scheduled run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueBackup {
    /// The appspace.
    pub appspace: String,
    /// Its new backup.
    pub backup: Option<Backup>,
    /// Why there is none.
    pub error: Option<String>,
}

/// `POST /v1/backups/verify`: every backup read back and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// Backups in the repository, all of them intact.
    pub backups: u64,
}

/// `POST /v1/appspaces/{key}/backups/{id}/restore`: what was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The appspace the data went into (a new one with `?into=`).
    pub appspace: String,
    /// The backup put back.
    pub restored: Backup,
    /// The backup of the data it replaced, taken first (none when the
    /// data went into a new appspace).
    pub replaced: Option<Backup>,
}

/// `DELETE /v1/appspaces/{key}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    /// Its name.
    pub name: String,
    /// Its domain.
    pub domain: String,
    /// Where its data and logs were kept (absent when purged).
    pub kept_at: Option<String>,
}

/// An appspace's egress allowlist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Egress {
    /// Entries allowed, in canonical form.
    pub allow: Vec<String>,
    /// What the app's manifest asks for (not allowed until an admin does).
    pub requested: Vec<String>,
}

/// Entries to add to (`allow`) or remove from (`deny`) an allowlist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressChange {
    /// The entries.
    pub entries: Vec<String>,
}

/// One egress attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EgressLogEntry {
    /// Sequence number.
    pub id: i64,
    /// When it ended (Unix seconds).
    pub at: i64,
    /// What the app asked for.
    pub destination: String,
    /// The address connected to.
    pub address: Option<String>,
    /// `allowed`, `denied` or `failed`.
    pub outcome: String,
    /// Why it was denied or failed.
    pub reason: String,
    /// Bytes out.
    pub bytes_up: u64,
    /// Bytes in.
    pub bytes_down: u64,
    /// Milliseconds from request to close.
    pub duration_ms: u64,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// The peer's uid.
    pub uid: u32,
    /// The peer's pid.
    pub pid: Option<i32>,
    /// The peer's user name.
    pub user: String,
    /// What was asked.
    pub action: String,
    /// Of what.
    pub target: String,
    /// Arguments.
    pub detail: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// The outcome.
    pub result: String,
}
