//! The host's state in SQLite (through sqlx, migrations embedded): apps,
//! installed versions, appspaces and an event log. Every multi-step change
//! is one transaction, and files on disk are reconciled with the database
//! at start, so a host killed at any point comes back consistent.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ds_sandbox::spec::Runtime;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

mod admin;
mod audit;
mod egress;

pub use admin::{AppSummary, LimitsUpdate, VersionSummary};
pub use audit::{AuditEntry, AuditRecord};
pub use egress::{EgressLogEntry, EGRESS_LOG_KEEP};

use crate::package::{AppStore, InstallError, InstalledVersion, Manifest, PackageLimits};

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

    /// Makes disk and database agree after a crash: a version directory the
    /// database does not know was never committed and is removed; a
    /// recorded version whose files are gone is forgotten (with its
    /// appspaces' link recorded as an event).
    async fn reconcile(&self) -> Result<(), StateError> {
        let rows = sqlx::query("SELECT app, version, dir FROM app_versions")
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing versions"))?;
        let mut known = Vec::new();
        for row in rows {
            let (app, version, dir): (String, String, String) =
                (row.get(0), row.get(1), row.get(2));
            if Path::new(&dir).is_dir() {
                known.push(PathBuf::from(dir));
            } else {
                let mut tx = self.pool.begin().await.map_err(db("beginning"))?;
                sqlx::query("DELETE FROM appspaces WHERE app = ? AND version = ?")
                    .bind(&app)
                    .bind(&version)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("forgetting appspaces of a lost version"))?;
                sqlx::query("DELETE FROM app_versions WHERE app = ? AND version = ?")
                    .bind(&app)
                    .bind(&version)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("forgetting a lost version"))?;
                record_event(
                    &mut tx,
                    None,
                    "version-lost",
                    &format!("{app} {version}: {dir} is gone"),
                )
                .await?;
                tx.commit().await.map_err(db("committing"))?;
            }
        }
        for (name, version, dir) in self.store.installed() {
            if !known.contains(&dir) {
                self.store.remove(&name, &version)?;
            }
        }
        Ok(())
    }

    /// Installs a package: files to a staging directory, then one
    /// transaction records the version and the files are renamed into
    /// place before it commits. A crash in between leaves files the
    /// database does not know, which [`State::open`] removes.
    pub async fn install(
        &self,
        source: &Path,
        limits: &PackageLimits,
    ) -> Result<InstalledVersion, StateError> {
        let staged = self.store.stage(source, limits)?;
        let m = staged.manifest().clone();
        let dir = self.store.version_dir(&m.name, &m.version);
        let mut tx = self.pool.begin().await.map_err(db("beginning"))?;
        sqlx::query("INSERT OR IGNORE INTO apps (name, created_at) VALUES (?, ?)")
            .bind(&m.name)
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(db("recording the app"))?;
        let inserted = sqlx::query(
            "INSERT INTO app_versions (app, version, runtime, entrypoint, memory_bytes, dir, manifest, installed_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&m.name)
        .bind(m.version.to_string())
        .bind(runtime_name(m.runtime))
        .bind(m.entrypoint.to_string_lossy().into_owned())
        .bind(m.memory_bytes.map(|b| b as i64))
        .bind(dir.to_string_lossy().into_owned())
        .bind(staged.manifest_text())
        .bind(now())
        .execute(&mut *tx)
        .await;
        if let Err(sqlx::Error::Database(e)) = &inserted {
            if e.is_unique_violation() {
                return Err(InstallError::DuplicateVersion {
                    name: m.name,
                    version: m.version,
                }
                .into());
            }
        }
        inserted.map_err(db("recording the version"))?;
        record_event(
            &mut tx,
            None,
            "installed",
            &format!("{} {}", m.name, m.version),
        )
        .await?;
        let installed = staged.commit()?;
        tx.commit().await.map_err(db("committing the install"))?;
        Ok(installed)
    }

    /// Creates an appspace of `app` `version` at `domain`.
    pub async fn create_appspace(
        &self,
        name: &str,
        domain: &str,
        app: &str,
        version: &semver::Version,
        data_dir: &Path,
        memory_bytes: u64,
    ) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await.map_err(db("beginning"))?;
        let exists = sqlx::query("SELECT 1 FROM app_versions WHERE app = ? AND version = ?")
            .bind(app)
            .bind(version.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("looking up the version"))?;
        if exists.is_none() {
            return Err(StateError::NotFound(format!(
                "{app} {version} is not installed"
            )));
        }
        let inserted = sqlx::query(
            "INSERT INTO appspaces (name, domain, app, version, data_dir, memory_bytes, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(name)
        .bind(domain)
        .bind(app)
        .bind(version.to_string())
        .bind(data_dir.to_string_lossy().into_owned())
        .bind(memory_bytes as i64)
        .bind(now())
        .execute(&mut *tx)
        .await;
        if let Err(sqlx::Error::Database(e)) = &inserted {
            if e.is_unique_violation() {
                return Err(StateError::Conflict(format!(
                    "appspace {name} or domain {domain} exists already"
                )));
            }
        }
        inserted.map_err(db("recording the appspace"))?;
        record_event(
            &mut tx,
            Some(name),
            "created",
            &format!("{app} {version} at {domain}"),
        )
        .await?;
        tx.commit().await.map_err(db("committing the appspace"))
    }

    /// Every appspace with what it runs.
    pub async fn appspaces(&self) -> Result<Vec<AppspaceRecord>, StateError> {
        let rows = sqlx::query(&format!("SELECT {APPSPACE_COLUMNS} ORDER BY s.name"))
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing appspaces"))?;
        Ok(rows.iter().map(appspace_from_row).collect())
    }

    /// Whether `app` `version` is recorded.
    pub async fn has_version(
        &self,
        app: &str,
        version: &semver::Version,
    ) -> Result<bool, StateError> {
        let row = sqlx::query("SELECT 1 FROM app_versions WHERE app = ? AND version = ?")
            .bind(app)
            .bind(version.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("looking up a version"))?;
        Ok(row.is_some())
    }

    /// Records an event outside any other change.
    pub async fn event(
        &self,
        appspace: Option<&str>,
        kind: &str,
        detail: &str,
    ) -> Result<(), StateError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(db("acquiring a connection"))?;
        record_event(&mut conn, appspace, kind, detail).await
    }

    /// The manifest text of an installed version.
    pub async fn manifest(
        &self,
        app: &str,
        version: &semver::Version,
    ) -> Result<Manifest, StateError> {
        let row = sqlx::query("SELECT manifest FROM app_versions WHERE app = ? AND version = ?")
            .bind(app)
            .bind(version.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a manifest"))?
            .ok_or_else(|| StateError::NotFound(format!("{app} {version} is not installed")))?;
        Ok(Manifest::from_str(&row.get::<String, _>(0)).map_err(InstallError::from)?)
    }
}

/// The columns [`appspace_from_row`] reads, and the join they come from.
pub(crate) const APPSPACE_COLUMNS: &str =
    "s.name, s.domain, s.app, s.version, v.runtime, v.entrypoint, v.dir, s.data_dir,
     s.memory_bytes, s.cpus, s.pids, s.status, s.created_at, s.egress
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
    }
}

pub(crate) async fn record_event(
    conn: &mut sqlx::SqliteConnection,
    appspace: Option<&str>,
    kind: &str,
    detail: &str,
) -> Result<(), StateError> {
    sqlx::query("INSERT INTO events (at, appspace, kind, detail) VALUES (?, ?, ?, ?)")
        .bind(now())
        .bind(appspace)
        .bind(kind)
        .bind(detail)
        .execute(conn)
        .await
        .map_err(db("recording an event"))?;
    Ok(())
}

pub(crate) fn runtime_name(r: Runtime) -> &'static str {
    match r {
        Runtime::Native => "native",
        Runtime::Deno => "deno",
    }
}

fn runtime_from(s: &str) -> Runtime {
    // The CHECK constraint admits only these two.
    if s == "deno" {
        Runtime::Deno
    } else {
        Runtime::Native
    }
}
