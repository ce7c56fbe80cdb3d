//! State changes the admin API makes: listing and removing apps, finding,
//! pausing, re-limiting and deleting appspaces. Each change is one
//! transaction with its event recorded inside it.

use std::str::FromStr;

use sqlx::Row;

use super::{
    appspace_from_row, db, record_event, AppspaceRecord, State, StateError, APPSPACE_COLUMNS,
};

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

/// New limits for an appspace; `None` keeps the current value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LimitsUpdate {
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU share in cores.
    pub cpus: Option<f64>,
    /// Most tasks.
    pub pids: Option<u64>,
}

impl State {
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
            record_event(&mut tx, None, "removed", &format!("{name} {}", v.version)).await?;
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

    /// The appspace whose domain or name is `key`.
    pub async fn appspace(&self, key: &str) -> Result<AppspaceRecord, StateError> {
        let row = sqlx::query(&format!(
            "SELECT {APPSPACE_COLUMNS} WHERE s.domain = ? OR s.name = ?"
        ))
        .bind(key)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("finding an appspace"))?
        .ok_or_else(|| StateError::NotFound(format!("no appspace {key:?}")))?;
        Ok(appspace_from_row(&row))
    }

    /// Pauses (`true`) or resumes an appspace.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<(), StateError> {
        let status = if paused { "paused" } else { "active" };
        let mut tx = self.pool.begin().await.map_err(db("beginning"))?;
        let done = sqlx::query("UPDATE appspaces SET status = ? WHERE name = ?")
            .bind(status)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db("setting an appspace's status"))?;
        if done.rows_affected() == 0 {
            return Err(StateError::NotFound(format!("no appspace {name:?}")));
        }
        record_event(&mut tx, Some(name), status, "").await?;
        tx.commit().await.map_err(db("committing the status"))
    }

    /// Changes an appspace's limits; returns the record as it is now.
    pub async fn set_limits(
        &self,
        name: &str,
        update: LimitsUpdate,
    ) -> Result<AppspaceRecord, StateError> {
        let mut tx = self.pool.begin().await.map_err(db("beginning"))?;
        let done = sqlx::query(
            "UPDATE appspaces SET memory_bytes = coalesce(?, memory_bytes),
                 cpus = coalesce(?, cpus), pids = coalesce(?, pids) WHERE name = ?",
        )
        .bind(update.memory_bytes.map(|m| m as i64))
        .bind(update.cpus)
        .bind(update.pids.map(|p| p as i64))
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(db("changing limits"))?;
        if done.rows_affected() == 0 {
            return Err(StateError::NotFound(format!("no appspace {name:?}")));
        }
        record_event(&mut tx, Some(name), "limits", &format!("{update:?}")).await?;
        tx.commit().await.map_err(db("committing the limits"))?;
        self.appspace(name).await
    }

    /// Forgets an appspace (its files are the caller's business).
    pub async fn delete_appspace(&self, name: &str) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await.map_err(db("beginning"))?;
        let done = sqlx::query("DELETE FROM appspaces WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db("deleting an appspace"))?;
        if done.rows_affected() == 0 {
            return Err(StateError::NotFound(format!("no appspace {name:?}")));
        }
        record_event(&mut tx, Some(name), "deleted", "").await?;
        tx.commit().await.map_err(db("committing the deletion"))
    }
}
