//! The `apps` and `app_versions` tables with the app store on disk:
//! installing (one transaction around moving the files into place),
//! listing, removing, and the start-up check that makes disk and
//! database agree.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::Row;
use tracing::warn;

use super::{db, now, runtime_name, State, StateError};
use crate::package::{InstallError, InstalledVersion, Manifest, PackageLimits, Staged};

/// One installed version of an app.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionSummary {
    /// Its version.
    pub version: semver::Version,
    /// `native` or `deno`.
    pub runtime: String,
    /// Entrypoint inside the package.
    pub entrypoint: String,
    /// Memory the manifest asks for, if any.
    pub memory_bytes: Option<u64>,
    /// When it was installed (Unix seconds).
    pub installed_at: i64,
    /// Appspaces running this version.
    pub appspaces: Vec<String>,
}

/// An app and its installed versions, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSummary {
    /// The app's name.
    pub name: String,
    /// Its versions.
    pub versions: Vec<VersionSummary>,
}

/// What [`State::stage_dev`] did with a package under development.
#[derive(Debug)]
pub enum DevPackage {
    /// Validated, to go over the files of its installed version.
    Staged(Staged),
    /// A version not installed before: installed.
    Installed(InstalledVersion),
}

impl State {
    /// Makes disk and database agree after a crash. A version directory
    /// the database does not know was never committed (a crashed install)
    /// and is removed, as are staging directories. Recorded data is never
    /// deleted: a recorded version whose files are missing marks its
    /// appspaces broken, with the reason, logged and audited; the admin
    /// decides (reinstall that version to repair them, or delete them).
    /// A version whose files are back repairs its appspaces.
    pub(super) async fn reconcile(&self) -> Result<(), StateError> {
        let rows = sqlx::query("SELECT app, version, dir FROM app_versions")
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing versions"))?;
        let mut known = Vec::new();
        for row in rows {
            let (app, version, dir): (String, String, String) =
                (row.get(0), row.get(1), row.get(2));
            known.push(PathBuf::from(&dir));
            let why = (!Path::new(&dir).is_dir()).then(|| {
                format!("the files of {app} {version} are missing ({dir}); reinstall that version or delete the appspace")
            });
            let changed: Vec<String> = sqlx::query(
                "UPDATE appspaces SET broken = ? WHERE app = ? AND version = ?
                   AND broken IS NOT ? RETURNING name",
            )
            .bind(&why)
            .bind(&app)
            .bind(&version)
            .bind(&why)
            .fetch_all(&self.pool)
            .await
            .map_err(db("marking appspaces of a missing version"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
            for name in changed {
                let result = match &why {
                    Some(why) => {
                        warn!(appspace = %name, "broken: {why}");
                        format!("broken: {why}")
                    }
                    None => format!("repaired: the files of {app} {version} are back"),
                };
                self.audit(&super::AuditRecord {
                    uid: 0,
                    pid: None,
                    user: "ds-host".into(),
                    action: "host.reconcile".into(),
                    target: name,
                    detail: String::new(),
                    ok: why.is_none(),
                    result,
                })
                .await?;
            }
        }
        for (name, version, dir) in self.store.installed() {
            if !known.contains(&dir) {
                self.store.remove(&name, &version)?;
            }
        }
        Ok(())
    }

    /// Reinstalling a recorded version whose files are missing puts the
    /// files back (the same manifest only) and repairs its appspaces.
    /// Gives `staged` back when this is not such a case.
    async fn repair(
        &self,
        staged: crate::package::Staged,
        dir: &Path,
    ) -> Result<Result<InstalledVersion, crate::package::Staged>, StateError> {
        let m = staged.manifest().clone();
        let recorded: Option<String> =
            sqlx::query("SELECT manifest FROM app_versions WHERE app = ? AND version = ?")
                .bind(&m.name)
                .bind(m.version.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("looking up a version"))?
                .map(|r| r.get(0));
        let Some(recorded) = recorded else {
            return Ok(Err(staged));
        };
        if dir.is_dir() {
            return Err(InstallError::DuplicateVersion {
                name: m.name,
                version: m.version,
            }
            .into());
        }
        if recorded != staged.manifest_text() {
            return Err(StateError::Conflict(format!(
                "{} {} is recorded with another manifest; its files are missing and only the \
                 same package can repair it",
                m.name, m.version
            )));
        }
        let installed = staged.commit()?;
        self.reconcile().await?;
        Ok(Ok(installed))
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
        let staged = match self.repair(staged, &dir).await? {
            Ok(repaired) => return Ok(repaired),
            Err(staged) => staged,
        };
        let mut tx = self.pool.begin().await.map_err(db("beginning"))?;
        sqlx::query("INSERT OR IGNORE INTO apps (name, created_at) VALUES (?, ?)")
            .bind(&m.name)
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(db("recording the app"))?;
        let inserted = sqlx::query(
            "INSERT INTO app_versions (app, version, runtime, entrypoint, memory_bytes, dir, manifest, installed_at, args, env)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&m.name)
        .bind(m.version.to_string())
        .bind(runtime_name(m.runtime))
        .bind(m.entrypoint.to_string_lossy().into_owned())
        .bind(m.memory_bytes.map(|b| b as i64))
        .bind(dir.to_string_lossy().into_owned())
        .bind(staged.manifest_text())
        .bind(now())
        .bind(serde_json::to_string(&m.args).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&m.env).unwrap_or_else(|_| "[]".into()))
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
        let installed = staged.commit()?;
        tx.commit().await.map_err(db("committing the install"))?;
        Ok(installed)
    }

    /// Dev mode only (`ds-host --dev --app DIR --watch`): validates the
    /// package at `source` exactly as an install and stages it to go over
    /// the recorded files of its version ([`State::reinstall_dev`]); a
    /// version not installed yet is installed at once.
    pub async fn stage_dev(
        &self,
        source: &Path,
        limits: &PackageLimits,
    ) -> Result<DevPackage, StateError> {
        let staged = self.store.stage_over(source, limits)?;
        let m = staged.manifest();
        if self.has_version(&m.name, &m.version).await? {
            return Ok(DevPackage::Staged(staged));
        }
        drop(staged);
        self.install(source, limits)
            .await
            .map(DevPackage::Installed)
    }

    /// Puts `staged` (from [`State::stage_dev`]) over the files of its
    /// version, its row updated in the same transaction as the files are
    /// exchanged. The caller keeps the version's appspaces stopped.
    pub async fn reinstall_dev(&self, staged: Staged) -> Result<InstalledVersion, StateError> {
        let m = staged.manifest().clone();
        let mut tx = self.pool.begin().await.map_err(db("beginning"))?;
        sqlx::query(
            "UPDATE app_versions SET runtime = ?, entrypoint = ?, memory_bytes = ?, manifest = ?,
                    args = ?, env = ?, installed_at = ?
             WHERE app = ? AND version = ?",
        )
        .bind(runtime_name(m.runtime))
        .bind(m.entrypoint.to_string_lossy().into_owned())
        .bind(m.memory_bytes.map(|b| b as i64))
        .bind(staged.manifest_text())
        .bind(serde_json::to_string(&m.args).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&m.env).unwrap_or_else(|_| "[]".into()))
        .bind(now())
        .bind(&m.name)
        .bind(m.version.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db("recording the reinstalled version"))?;
        let installed = staged.commit()?;
        tx.commit().await.map_err(db("committing the reinstall"))?;
        Ok(installed)
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

    /// Every app with its versions, by name.
    pub async fn apps(&self) -> Result<Vec<AppSummary>, StateError> {
        let rows = sqlx::query(
            "SELECT v.app, v.version, v.runtime, v.entrypoint, v.memory_bytes, v.installed_at,
                    (SELECT group_concat(s.name, ' ') FROM appspaces s
                      WHERE s.app = v.app AND s.version = v.version)
             FROM app_versions v",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing apps"))?;
        let mut apps: Vec<AppSummary> = Vec::new();
        for r in rows {
            let name: String = r.get(0);
            let version = semver::Version::from_str(&r.get::<String, _>(1)).map_err(|e| {
                StateError::Conflict(format!("a recorded version of {name} is not semver: {e}"))
            })?;
            let users: Option<String> = r.get(6);
            let summary = VersionSummary {
                version,
                runtime: r.get(2),
                entrypoint: r.get(3),
                memory_bytes: r.get::<Option<i64>, _>(4).map(|m| m as u64),
                installed_at: r.get(5),
                appspaces: users
                    .map(|u| u.split(' ').map(str::to_owned).collect())
                    .unwrap_or_default(),
            };
            match apps.iter_mut().find(|a| a.name == name) {
                Some(app) => app.versions.push(summary),
                None => apps.push(AppSummary {
                    name,
                    versions: vec![summary],
                }),
            }
        }
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        for app in &mut apps {
            app.versions.sort_by(|a, b| a.version.cmp(&b.version));
        }
        Ok(apps)
    }

    /// One app, or `NotFound`.
    pub async fn app(&self, name: &str) -> Result<AppSummary, StateError> {
        self.apps()
            .await?
            .into_iter()
            .find(|a| a.name == name)
            .ok_or_else(|| StateError::NotFound(format!("no app named {name:?} is installed")))
    }

    /// Removes `version` of `name` (every version when `None`), refused
    /// while an appspace uses one. The database forgets first; the files
    /// go after it commits (a crash in between leaves files that the next
    /// start removes). Returns the versions removed.
    pub async fn remove_app(
        &self,
        name: &str,
        version: Option<&semver::Version>,
    ) -> Result<Vec<semver::Version>, StateError> {
        let app = self.app(name).await?;
        let doomed: Vec<&super::VersionSummary> = app
            .versions
            .iter()
            .filter(|v| version.is_none_or(|want| &v.version == want))
            .collect();
        if doomed.is_empty() {
            let v = version.map(ToString::to_string).unwrap_or_default();
            return Err(StateError::NotFound(format!(
                "{name} has no version {v} installed"
            )));
        }
        let mut tx = self.pool.begin().await.map_err(db("beginning"))?;
        for v in &doomed {
            let users: Vec<String> =
                sqlx::query("SELECT name FROM appspaces WHERE app = ? AND version = ?")
                    .bind(name)
                    .bind(v.version.to_string())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db("finding users of a version"))?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
            if !users.is_empty() {
                return Err(StateError::Conflict(format!(
                    "{name} {} is used by appspace(s) {}; delete them first",
                    v.version,
                    users.join(", ")
                )));
            }
            sqlx::query("DELETE FROM app_versions WHERE app = ? AND version = ?")
                .bind(name)
                .bind(v.version.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db("removing a version"))?;
        }
        sqlx::query(
            "DELETE FROM apps WHERE name = ? AND NOT EXISTS (SELECT 1 FROM app_versions WHERE app = ?)",
        )
        .bind(name)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(db("removing the app"))?;
        tx.commit().await.map_err(db("committing the removal"))?;
        let mut removed = Vec::new();
        for v in doomed {
            self.store.remove(name, &v.version)?;
            removed.push(v.version.clone());
        }
        Ok(removed)
    }

    /// The newest installed version of `app`.
    pub async fn latest_version(&self, app: &str) -> Result<semver::Version, StateError> {
        self.app(app)
            .await?
            .versions
            .last()
            .map(|v| v.version.clone())
            .ok_or_else(|| StateError::NotFound(format!("{app} has no installed version")))
    }
}
