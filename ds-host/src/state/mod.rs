//! The host's state in SQLite (through sqlx, migrations embedded), one
//! file per table: apps and installed versions ([`apps`]), appspaces
//! ([`appspaces`]) and their host ids ([`host_ids`]), the audit log
//! ([`audit`]), the egress log ([`egress`]) and usage per hour ([`usage`]). Every multi-step change
//! is one transaction, and files on disk are reconciled with the database
//! at start, so a host killed at any point comes back consistent.

use std::path::{Path, PathBuf};

use ds_sandbox::spec::Runtime;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

mod apps;
mod appspaces;
mod audit;
mod egress;
mod host_ids;
mod usage;

pub use apps::{AppSummary, DevPackage, VersionSummary};
pub use appspaces::{LimitsUpdate, Storage};
pub use audit::{AuditEntry, AuditRecord};
pub use egress::{EgressLogEntry, EGRESS_LOG_KEEP};
pub use usage::{hour_of, UsageHour, USAGE_KEEP_SECS};

use crate::package::{AppStore, InstallError};

/// Errors of the state store, naming the operation.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database failed.
    #[error("state database: {what}: {source}")]
    Db {
        /// What we were doing.
        what: &'static str,
        /// The database error.
        source: sqlx::Error,
    },
    /// The state directory could not be created.
    #[error("creating the state directory {path}: {source}")]
    Dir {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Migrations failed.
    #[error("state database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Installing a package failed.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// A name or domain is taken.
    #[error("{0}")]
    Conflict(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
}

pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> StateError {
    move |source| StateError::Db { what, source }
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An appspace as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AppspaceRecord {
    /// Its name.
    pub name: String,
    /// Its domain.
    pub domain: String,
    /// The app.
    pub app: String,
    /// The version it runs.
    pub version: String,
    /// Runtime of that version.
    pub runtime: Runtime,
    /// Entrypoint of that version.
    pub entrypoint: String,
    /// Its arguments (`command` after the entrypoint, unexpanded).
    pub args: Vec<String>,
    /// Its static environment (`[env]`).
    pub env: Vec<(String, String)>,
    /// Installed files of that version.
    pub app_dir: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Memory limit.
    pub memory_bytes: u64,
    /// CPU share in cores.
    pub cpus: f64,
    /// Most tasks at once.
    pub pids: u64,
    /// Paused appspaces neither serve nor start.
    pub paused: bool,
    /// When it was created (Unix seconds).
    pub created_at: i64,
    /// Its egress allowlist entries, as stored.
    pub egress: Vec<String>,
    /// Its own host uid and gid.
    pub uid: u32,
    /// Why it cannot run, when it cannot.
    pub broken: Option<String>,
    /// A change under way (an upgrade's journal, JSON), to be finished or
    /// undone.
    pub pending: Option<String>,
    /// Its disk limit in bytes (0: none).
    pub disk_bytes: u64,
    /// What enforces it.
    pub disk_kind: DiskKind,
}

impl AppspaceRecord {
    /// Its home: the directory holding its data directory (or, for a disk
    /// image, the image and its mount point), its logs and its staging.
    pub fn home(&self) -> PathBuf {
        let up = self.data_dir.parent().unwrap_or(&self.data_dir);
        match self.disk_kind {
            DiskKind::Image => up.parent().unwrap_or(up).to_owned(),
            _ => up.to_owned(),
        }
    }
}

/// What holds an appspace's data to its disk limit (docs/quotas.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    /// Nothing: the file system offers no project quotas and the host
    /// makes no images (or was told not to).
    None,
    /// A project quota on the data directory's file system; the project
    /// is the appspace's host uid.
    Project,
    /// A file system of its own in `<home>/disk.img`, mounted at
    /// `<home>/disk`.
    Image,
}

impl DiskKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskKind::None => "none",
            DiskKind::Project => "project",
            DiskKind::Image => "image",
        }
    }

    pub(crate) fn from_stored(s: &str) -> Self {
        match s {
            "project" => DiskKind::Project,
            "image" => DiskKind::Image,
            _ => DiskKind::None,
        }
    }
}

/// The state database plus the app store it describes.
#[derive(Debug)]
pub struct State {
    pub(crate) pool: SqlitePool,
    pub(crate) store: AppStore,
}

impl State {
    /// Opens (creating) `dir/state.db` and `dir/apps`, migrates, and
    /// reconciles the app store with the database.
    pub async fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join("state.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(db("opening"))?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let store = AppStore::open(dir.join("apps"))?;
        let state = Self { pool, store };
        state.reconcile().await?;
        Ok(state)
    }
}

/// The columns [`appspace_from_row`] reads, and the join they come from.
pub(crate) const APPSPACE_COLUMNS: &str =
    "s.name, s.domain, s.app, s.version, v.runtime, v.entrypoint, v.dir, s.data_dir,
     s.memory_bytes, s.cpus, s.pids, s.status, s.created_at, s.egress, s.uid, s.broken,
     s.pending, s.disk_bytes, s.disk_kind, v.args, v.env
     FROM appspaces s JOIN app_versions v ON v.app = s.app AND v.version = s.version";

pub(crate) fn appspace_from_row(r: &sqlx::sqlite::SqliteRow) -> AppspaceRecord {
    AppspaceRecord {
        name: r.get(0),
        domain: r.get(1),
        app: r.get(2),
        version: r.get(3),
        runtime: runtime_from(&r.get::<String, _>(4)),
        entrypoint: r.get(5),
        app_dir: PathBuf::from(r.get::<String, _>(6)),
        data_dir: PathBuf::from(r.get::<String, _>(7)),
        memory_bytes: r.get::<i64, _>(8) as u64,
        cpus: r.get(9),
        pids: r.get::<i64, _>(10) as u64,
        paused: r.get::<String, _>(11) == "paused",
        created_at: r.get(12),
        // The column is only written from checked lists; anything else
        // reads as empty (no egress) rather than failing the host.
        egress: serde_json::from_str(&r.get::<String, _>(13)).unwrap_or_default(),
        uid: r.get::<i64, _>(14) as u32,
        broken: r.get(15),
        pending: r.get(16),
        disk_bytes: r.get::<i64, _>(17) as u64,
        disk_kind: DiskKind::from_stored(&r.get::<String, _>(18)),
        // Written only from validated manifests, like egress above.
        args: serde_json::from_str(&r.get::<String, _>(19)).unwrap_or_default(),
        env: serde_json::from_str(&r.get::<String, _>(20)).unwrap_or_default(),
    }
}

pub(crate) fn runtime_name(r: Runtime) -> &'static str {
    match r {
        Runtime::Native => "native",
        Runtime::Deno => "deno",
    }
}

pub(crate) fn runtime_from(s: &str) -> Runtime {
    // The CHECK constraint admits only these two.
    if s == "deno" {
        Runtime::Deno
    } else {
        Runtime::Native
    }
}

impl State {
    /// Writes a consistent copy of the database to `to` (SQLite's `VACUUM
    /// INTO`: one transaction's view, while the host keeps writing).
    pub async fn copy_to(&self, to: &Path) -> Result<(), StateError> {
        let _ = std::fs::remove_file(to);
        sqlx::query("VACUUM INTO ?")
            .bind(to.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await
            .map_err(db("copying the database"))?;
        Ok(())
    }

    /// In the database file `file` (not open), moves every recorded path
    /// under `from` to the same place under `to` (a state directory
    /// restored somewhere else than where it was backed up).
    pub async fn rebase(file: &Path, from: &Path, to: &Path) -> Result<(), StateError> {
        use sqlx::Connection;
        if from == to {
            return Ok(());
        }
        let options = SqliteConnectOptions::new().filename(file);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .map_err(db("opening the restored database"))?;
        let (from, to) = (
            format!("{}/", from.to_string_lossy().trim_end_matches('/')),
            format!("{}/", to.to_string_lossy().trim_end_matches('/')),
        );
        for (table, column) in [("app_versions", "dir"), ("appspaces", "data_dir")] {
            sqlx::query(&format!(
                "UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?"
            ))
            .bind(&to)
            .bind(from.len() as i64 + 1)
            .bind(from.len() as i64)
            .bind(&from)
            .execute(&mut conn)
            .await
            .map_err(db("moving the restored paths"))?;
        }
        conn.close()
            .await
            .map_err(db("closing the restored database"))
    }
}
