//! Restoring a backup taken at another version of the app: the data and
//! the version it was taken with come back together (data of one schema
//! is never handed to a version that keeps another).

use std::sync::Arc;

use super::{Journal, UpgradeError};
use crate::appspace::{Appspace, AppspaceConfig};
use crate::backup::{Backups, Snapshot};
use crate::host::Host;
use crate::state::{State, StateError};

/// Puts backup `id` back into appspace `key`; returns the backup put
/// back and the backup of the data it replaced. When the backup was
/// taken at another version, that version (which must be installed)
/// comes back with it.
pub async fn restore(
    state: &State,
    host: &Arc<Host>,
    backups: &Backups,
    key: &str,
    id: &str,
) -> Result<(Snapshot, Snapshot), UpgradeError> {
    let rec = state.appspace(key).await?;
    let name = rec.name.clone();
    if rec.pending.is_some() {
        return Err(UpgradeError::Busy(name));
    }
    let old = host
        .get(&name)
        .filter(|a| a.config.name == name)
        .ok_or_else(|| StateError::NotFound(format!("no appspace {key:?}")))?;
    let wanted = backups
        .find(&name, id)
        .await
        .map_err(UpgradeError::Backup)?;
    let grace = host.lifecycle.stop_grace;
    let version = match &wanted.version {
        Some(v) if *v != rec.version => v.clone(),
        // Taken at the version it runs: the data alone.
        _ => {
            let replaced = backups
                .restore(&old, id, grace)
                .await
                .map_err(UpgradeError::Backup)?;
            return Ok((wanted, replaced));
        }
    };
    let to: semver::Version = version
        .parse()
        .map_err(|e| StateError::Conflict(format!("backup {id} names version {version:?}: {e}")))?;
    let next_rec = state.appspace_at(&name, &to).await.map_err(|e| match e {
        StateError::NotFound(_) => StateError::NotFound(format!(
            "backup {id} was taken at {} {version}, which is not installed: install it first (its data needs it)",
            rec.app
        )),
        e => e,
    })?;
    let next = Arc::new(
        Appspace::new(AppspaceConfig::from_record(next_rec), &host.lifecycle)
            .map_err(UpgradeError::Prepare)?,
    );
    let held = backups.exclusive().await;
    let why = format!("restoring backup {id} (taken at {version})");
    let (_, outcome) = old
        .out_of_service(grace, &why, async {
            let replaced = backups
                .backup_still(&held, &old, "pre-restore")
                .await
                .map_err(UpgradeError::Backup)?;
            // Journal first: a host killed from here on puts `replaced`
            // back at its next start (as before the restore).
            let journal = serde_json::to_string(&Journal {
                op: "restore".into(),
                from: rec.version.clone(),
                to: version.clone(),
                backup: replaced.id.clone(),
                app_installed: false,
            })
            .unwrap_or_default();
            state.set_pending(&name, Some(&journal)).await?;
            let done = async {
                backups
                    .put_back(&held, &wanted, &old.config.data_dir)
                    .await
                    .map_err(UpgradeError::Backup)?;
                state.set_version(&name, &to).await?;
                Ok::<(), UpgradeError>(())
            }
            .await;
            if let Err(e) = done {
                // Undo: the data as it was (the backup just taken).
                let undone = backups
                    .put_back(&held, &replaced, &old.config.data_dir)
                    .await;
                match undone {
                    Ok(()) => {
                        let _ = state.set_pending(&name, None).await;
                    }
                    Err(u) => {
                        // Its data is neither as it was nor the backup's:
                        // it must not serve it. The journal stays, so the
                        // next start tries the undo again.
                        let broken = format!(
                            "restoring backup {id} failed and could not be undone ({u}): backup {} holds the data as it was",
                            replaced.id
                        );
                        let _ = state.set_broken(&name, Some(&broken)).await;
                        old.log_host(&broken);
                        let mut config = old.config.clone();
                        config.broken = Some(broken);
                        if let Ok(stand_in) = Appspace::new(config, &host.lifecycle) {
                            host.replace(&old, Arc::new(stand_in));
                        }
                        old.mark_replaced();
                    }
                }
                return Err(e);
            }
            super::hand_over(state, host, &old, &next).await;
            next.log_host(&format!(
                "restored backup {id}, with {version} (was {}); the data it replaced is backup {}",
                rec.version, replaced.id
            ));
            Ok((wanted.clone(), replaced))
        })
        .await;
    drop(held);
    outcome
}
