//! Moving an appspace to another version of its app (docs/upgrades.md):
//! no backup, no upgrade; the data is migrated in the new version's
//! sandbox, the new version started and asked whether it works, and on
//! any failure the backup and the old version are put back by
//! themselves. Only a new version that works is recorded; a host killed
//! half-way rolls back at its next start ([`recover`]).

mod plan;
mod recover;
mod restore;

use std::sync::Arc;

use crate::appspace::{Appspace, AppspaceConfig};
use crate::backup::{BackupError, Backups};
use crate::host::Host;
use crate::state::{State, StateError};
pub use plan::{plan, Incompatible, Migration, Runner};
pub use recover::recover;
pub use restore::restore;

/// Why an upgrade did not happen (nothing changed unless it says so).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// Already there.
    #[error("appspace {appspace} runs {version} already")]
    SameVersion {
        /// The appspace.
        appspace: String,
        /// Its version.
        version: String,
    },
    /// The schemas do not allow it.
    #[error("cannot move to that version: {0}")]
    Incompatible(#[from] Incompatible),
    /// It is paused (an upgrade must start it to check it).
    #[error(
        "appspace {0} is paused: resume it first (an upgrade starts it to check that it works)"
    )]
    Paused(String),
    /// Another change is under way.
    #[error("appspace {0} has a change under way already")]
    Busy(String),
    /// The backup before the upgrade failed.
    #[error("no backup, no upgrade: {0}")]
    Backup(BackupError),
    /// The state database failed, or something named does not exist.
    #[error(transparent)]
    State(#[from] StateError),
    /// Setting up the new version failed before anything changed.
    #[error("preparing the new version: {0}")]
    Prepare(std::io::Error),
    /// It failed and was undone.
    #[error(
        "the move to {to} failed: {why}; rolled back to {from} with the data of backup {backup}"
    )]
    RolledBack {
        /// The version it stays at.
        from: String,
        /// The version tried.
        to: String,
        /// What failed.
        why: String,
        /// The backup put back.
        backup: String,
    },
    /// It failed and undoing it failed too.
    #[error("the move to {to} failed: {why}; rolling back failed too: {rollback}; the appspace is marked broken until backup {backup} is restored (dsctl backup restore)")]
    RollbackFailed {
        /// The version tried.
        to: String,
        /// What failed.
        why: String,
        /// Why the roll-back failed.
        rollback: String,
        /// The backup to restore.
        backup: String,
    },
}

/// A finished upgrade.
#[derive(Debug, Clone)]
pub struct Upgraded {
    /// The version left.
    pub from: String,
    /// The version now run.
    pub to: String,
    /// The backup taken before.
    pub backup: String,
    /// The migration run, if any.
    pub migration: Option<Migration>,
    /// What the health path answered.
    pub health_status: u16,
}

/// What an interrupted upgrade, restore or import left in the state
/// database.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Journal {
    /// `upgrade`, `restore` or `import`.
    pub(crate) op: String,
    /// The version it left (an import: the domain it came from).
    pub(crate) from: String,
    /// The version it went to.
    pub(crate) to: String,
    /// The backup that holds the data as it was (none for an import).
    pub(crate) backup: String,
    /// An import installed the app version it runs (undone with it,
    /// unless another appspace uses it by then).
    #[serde(default)]
    pub(crate) app_installed: bool,
}

/// `next` takes `old`'s place (starts that waited for `old` find it
/// retired and go to `next`) with the admin's settings as recorded now: a
/// change of limits or a pause while `next` was prepared applies to it (an
/// admin change that still found `old` re-applies itself to the successor:
/// see the limits and pause handlers).
pub(crate) async fn hand_over(
    state: &State,
    host: &Host,
    old: &Arc<Appspace>,
    next: &Arc<Appspace>,
) {
    host.replace(old, next.clone());
    old.mark_replaced();
    if let Ok(rec) = state.appspace(&next.config.name).await {
        if next.adopt(&rec, host.lifecycle.stop_grace).await {
            host.restart_for_allowlist(next);
        }
    }
}

/// The journal op of an import: a host killed before it finished removes
/// the half-made appspace at its next start.
pub(crate) const IMPORT: &str = "import";

/// Moves appspace `key` to version `to` of its app (up or down).
pub async fn upgrade(
    state: &State,
    host: &Arc<Host>,
    backups: &Backups,
    key: &str,
    to: &semver::Version,
) -> Result<Upgraded, UpgradeError> {
    let rec = state.appspace(key).await?;
    let name = rec.name.clone();
    if rec.pending.is_some() {
        return Err(UpgradeError::Busy(name));
    }
    let old = host
        .get(&name)
        .filter(|a| a.config.name == name)
        .ok_or_else(|| StateError::NotFound(format!("no appspace {key:?}")))?;
    if old.is_paused() {
        return Err(UpgradeError::Paused(name));
    }
    let from = rec.version.clone();
    if from == to.to_string() {
        return Err(UpgradeError::SameVersion {
            appspace: name,
            version: from,
        });
    }
    let from_version: semver::Version = from
        .parse()
        .map_err(|e| StateError::Conflict(format!("recorded version {from:?}: {e}")))?;
    let current = state.manifest(&rec.app, &from_version).await?;
    let target = state.manifest(&rec.app, to).await?;
    let migration = plan(&current, &target)?;
    let life = &host.lifecycle;
    let next = Arc::new(
        Appspace::new(
            AppspaceConfig::from_record(state.appspace_at(&name, to).await?),
            life,
        )
        .map_err(UpgradeError::Prepare)?,
    );
    // Lock order: backups first, then the appspace (as restores take them).
    let held = backups.exclusive().await;
    let why = format!("moving from {from} to {to}");
    let (_, outcome) = old
        .out_of_service(life.stop_grace, &why, async {
            let backup = backups
                .backup_still(&held, &old, "pre-upgrade")
                .await
                .map_err(UpgradeError::Backup)?;
            old.log_host(&format!("backed up as {} before {why}", backup.id));
            let journal = serde_json::to_string(&Journal {
                op: "upgrade".into(),
                from: from.clone(),
                to: to.to_string(),
                backup: backup.id.clone(),
                app_installed: false,
            })
            .unwrap_or_default();
            state.set_pending(&name, Some(&journal)).await?;
            let tried = async {
                if let Some(m) = &migration {
                    let runner = match m.runner {
                        Runner::Target => &next.config,
                        Runner::Current => &old.config,
                    };
                    next.run_once(&host.launcher, runner, &m.argv, m.timeout)
                        .await
                        .map_err(|e| format!("the migration from schema {} to {} failed: {e}", m.from, m.to))?;
                }
                next.start_now(&host.launcher, life)
                    .await
                    .map_err(|e| format!("{to} did not start: {e}"))?;
                let status = next
                    .probe(&target.health, life.start_timeout)
                    .await
                    .map_err(|e| format!("{to} does not work: {e}"))?;
                // The moment it takes effect: the version and the cleared
                // journal in one transaction.
                state
                    .set_version(&name, to)
                    .await
                    .map_err(|e| format!("recording the new version: {e}"))?;
                Ok::<u16, String>(status)
            }
            .await;
            match tried {
                Ok(health_status) => {
                    // Starts that waited for the old one find it replaced
                    // and go to this one.
                    hand_over(state, host, &old, &next).await;
                    next.log_host(&format!("now at {to} (was {from}); backup {} holds the data as it was", backup.id));
                    Ok(Upgraded {
                        from: from.clone(),
                        to: to.to_string(),
                        backup: backup.id,
                        migration: migration.clone(),
                        health_status,
                    })
                }
                Err(why) => {
                    next.retire(life.stop_grace).await;
                    old.log_host(&format!("{why}; rolling back"));
                    let undone = async {
                        backups
                            .put_back(&held, &backup, &old.config.data_dir)
                            .await
                            .map_err(|e| e.to_string())?;
                        state
                            .set_pending(&name, None)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    .await;
                    match undone {
                        Ok(()) => {
                            old.log_host(&format!("rolled back to {from} and backup {}", backup.id));
                            Err(UpgradeError::RolledBack {
                                from: from.clone(),
                                to: to.to_string(),
                                why,
                                backup: backup.id,
                            })
                        }
                        Err(rollback) => {
                            let broken = format!(
                                "an upgrade to {to} failed and could not be rolled back: restore backup {}",
                                backup.id
                            );
                            let _ = state.set_broken(&name, Some(&broken)).await;
                            old.log_host(&broken);
                            // It must not serve what the failed change
                            // left: a broken successor takes its place.
                            let mut config = old.config.clone();
                            config.broken = Some(broken);
                            if let Ok(stand_in) = Appspace::new(config, life) {
                                host.replace(&old, Arc::new(stand_in));
                            }
                            old.mark_replaced();
                            Err(UpgradeError::RollbackFailed {
                                to: to.to_string(),
                                why,
                                rollback,
                                backup: backup.id,
                            })
                        }
                    }
                }
            }
        })
        .await;
    drop(held);
    outcome
}
