//! The `appspaces` table and each appspace's host id (`host_ids`):
//! creating, finding, pausing, re-limiting, marking broken and deleting.

use std::path::Path;

use sqlx::Row;

use super::{
    appspace_from_row, db, now, AppspaceRecord, DiskKind, State, StateError, APPSPACE_COLUMNS,
};

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

/// Where an appspace's data lives and how its disk use is limited.
#[derive(Debug, Clone, Copy)]
pub struct Storage<'a> {
    /// The data directory.
    pub data_dir: &'a Path,
    /// How the disk limit is enforced, and the limit in bytes.
    pub disk: (DiskKind, u64),
    /// The journal it is recorded with, while its data is still being put
    /// in (an import: a host killed before it is cleared removes it).
    pub pending: Option<&'a str>,
}

impl State {
    /// Creates an appspace of `app` `version` at `domain`.
    pub async fn create_appspace(
        &self,
        name: &str,
        domain: &str,
        app: &str,
        version: &semver::Version,
        memory_bytes: u64,
        storage: Storage<'_>,
    ) -> Result<(), StateError> {
        let Storage {
            data_dir,
            disk,
            pending,
        } = storage;
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
        let uid = super::host_ids::allocate(&mut tx, name).await?;
        let inserted = sqlx::query(
            "INSERT INTO appspaces (name, domain, app, version, data_dir, memory_bytes, created_at, uid,
                 disk_kind, disk_bytes, pending)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(name)
        .bind(domain)
        .bind(app)
        .bind(version.to_string())
        .bind(data_dir.to_string_lossy().into_owned())
        .bind(memory_bytes as i64)
        .bind(now())
        .bind(i64::from(uid))
        .bind(disk.0.as_str())
        .bind(disk.1 as i64)
        .bind(pending)
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
        tx.commit().await.map_err(db("committing the limits"))?;
        self.appspace(name).await
    }

    /// Records an appspace's disk limit (already applied by the caller).
    pub async fn set_disk_limit(&self, name: &str, bytes: u64) -> Result<(), StateError> {
        let done = sqlx::query("UPDATE appspaces SET disk_bytes = ? WHERE name = ?")
            .bind(bytes as i64)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db("changing the disk limit"))?;
        if done.rows_affected() == 0 {
            return Err(StateError::NotFound(format!("no appspace {name:?}")));
        }
        Ok(())
    }

    /// Moves an appspace to another way of limiting its disk, with the data
    /// directory that way uses (a host restored on a machine that limits
    /// disks differently, before any data is put back).
    pub async fn set_disk_layout(
        &self,
        name: &str,
        kind: DiskKind,
        data_dir: &Path,
    ) -> Result<(), StateError> {
        sqlx::query("UPDATE appspaces SET disk_kind = ?, data_dir = ? WHERE name = ?")
            .bind(kind.as_str())
            .bind(data_dir.to_string_lossy().into_owned())
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db("changing the disk layout"))?;
        Ok(())
    }

    /// An appspace made without a disk limit now has one: its way, data
    /// directory and limit in one change.
    pub async fn set_disk(
        &self,
        name: &str,
        kind: DiskKind,
        data_dir: &Path,
        bytes: u64,
    ) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE appspaces SET disk_kind = ?, data_dir = ?, disk_bytes = ? WHERE name = ?",
        )
        .bind(kind.as_str())
        .bind(data_dir.to_string_lossy().into_owned())
        .bind(bytes as i64)
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(db("giving it a disk limit"))?;
        Ok(())
    }

    /// Marks appspaces broken (`Some(why)`) or repaired (`None`).
    pub async fn set_broken(&self, name: &str, why: Option<&str>) -> Result<(), StateError> {
        sqlx::query("UPDATE appspaces SET broken = ? WHERE name = ?")
            .bind(why)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db("marking an appspace broken"))?;
        Ok(())
    }

    /// Forgets an appspace (its files are the caller's business; its host
    /// id stays taken until [`State::release_host_id`]).
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
        sqlx::query("DELETE FROM usage_hours WHERE appspace = ?")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db("deleting an appspace's usage"))?;
        tx.commit().await.map_err(db("committing the deletion"))
    }

    /// Records a change under way (`Some(journal)`), or that none is.
    pub async fn set_pending(&self, name: &str, journal: Option<&str>) -> Result<(), StateError> {
        let done = sqlx::query("UPDATE appspaces SET pending = ? WHERE name = ?")
            .bind(journal)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db("recording a change under way"))?;
        if done.rows_affected() == 0 {
            return Err(StateError::NotFound(format!("no appspace {name:?}")));
        }
        Ok(())
    }

    /// Moves an appspace to `version` and clears its pending change, in
    /// one transaction: the moment an upgrade (or a restore that brings
    /// an older version back) takes effect.
    pub async fn set_version(
        &self,
        name: &str,
        version: &semver::Version,
    ) -> Result<(), StateError> {
        let done = sqlx::query(
            "UPDATE appspaces SET version = ?, pending = NULL, broken = NULL WHERE name = ?
               AND EXISTS (SELECT 1 FROM app_versions v WHERE v.app = appspaces.app AND v.version = ?)",
        )
        .bind(version.to_string())
        .bind(name)
        .bind(version.to_string())
        .execute(&self.pool)
        .await
        .map_err(db("changing an appspace's version"))?;
        if done.rows_affected() == 0 {
            return Err(StateError::NotFound(format!(
                "no appspace {name:?} of an app with version {version} installed"
            )));
        }
        Ok(())
    }

    /// The record `name` would have at `version` (what a start would run),
    /// without changing anything.
    pub async fn appspace_at(
        &self,
        name: &str,
        version: &semver::Version,
    ) -> Result<AppspaceRecord, StateError> {
        let mut rec = self.appspace(name).await?;
        let row = sqlx::query(
            "SELECT runtime, entrypoint, dir, args, env FROM app_versions WHERE app = ? AND version = ?",
        )
        .bind(&rec.app)
        .bind(version.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("looking up a version"))?
        .ok_or_else(|| StateError::NotFound(format!("{} {version} is not installed", rec.app)))?;
        rec.version = version.to_string();
        rec.runtime = super::runtime_from(&row.get::<String, _>(0));
        rec.entrypoint = row.get(1);
        rec.app_dir = std::path::PathBuf::from(row.get::<String, _>(2));
        rec.args = serde_json::from_str(&row.get::<String, _>(3)).unwrap_or_default();
        rec.env = serde_json::from_str(&row.get::<String, _>(4)).unwrap_or_default();
        Ok(rec)
    }
}
