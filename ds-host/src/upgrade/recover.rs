//! At start-up, before anything serves: changes a killed host left half
//! done are undone, so every appspace is as it was before them or as it
//! is after them, never in between.

use tracing::{info, warn};

use super::Journal;
use crate::backup::Backups;
use crate::disk::Disks;
use crate::state::{AppspaceRecord, State, StateError};

/// Undoes what an interrupted upgrade, restore or import left: a data
/// directory moved aside by a restore is put back, a restore's staging
/// removed, an upgrade's journal rolled back (its backup restored; the
/// version was never changed), a half-made import removed with what it
/// installed. An appspace whose roll-back fails is marked broken.
/// Returns the appspaces rolled back, each with a line for its log.
pub async fn recover(
    state: &State,
    backups: &Backups,
    disks: &Disks,
) -> Result<Vec<(String, String)>, StateError> {
    let mut rolled_back = Vec::new();
    for rec in state.appspaces().await? {
        crate::backup::recover_swap(&rec.data_dir);
        let Some(journal) = &rec.pending else {
            continue;
        };
        if let Ok(j) = serde_json::from_str::<Journal>(journal) {
            if j.op == super::IMPORT {
                unimport(state, disks, &rec, &j).await?;
                continue;
            }
        }
        match roll_back(backups, &rec, journal).await {
            Ok(what) => {
                state.set_pending(&rec.name, None).await?;
                info!(appspace = %rec.name, "{what}");
                rolled_back.push((rec.name.clone(), what));
            }
            Err(why) => {
                let broken = format!("an interrupted change could not be rolled back: {why}");
                warn!(appspace = %rec.name, "{broken}");
                state.set_broken(&rec.name, Some(&broken)).await?;
            }
        }
    }
    Ok(rolled_back)
}

async fn roll_back(
    backups: &Backups,
    rec: &AppspaceRecord,
    journal: &str,
) -> Result<String, String> {
    let journal: Journal =
        serde_json::from_str(journal).map_err(|e| format!("its journal {journal:?}: {e}"))?;
    let held = backups.exclusive().await;
    let snapshot = backups
        .find(&rec.name, &journal.backup)
        .await
        .map_err(|e| e.to_string())?;
    backups
        .put_back(&held, &snapshot, &rec.data_dir)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "the host stopped during a move from {} to {}: rolled back to {} with the data of backup {}",
        journal.from, journal.to, journal.from, journal.backup
    ))
}

/// Removes an appspace an import had not finished making (the import was
/// never answered as done): its row, uid, disk and files, and the app
/// version the import installed if nothing else uses it.
async fn unimport(
    state: &State,
    disks: &Disks,
    rec: &AppspaceRecord,
    journal: &Journal,
) -> Result<(), StateError> {
    if let Err(e) = disks.release(rec).await {
        warn!(appspace = %rec.name, error = %e, "releasing the disk of an interrupted import");
    }
    state.delete_appspace(&rec.name).await?;
    state.release_host_id(rec.uid).await?;
    if let Err(e) = std::fs::remove_dir_all(rec.home()) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(appspace = %rec.name, error = %e, "removing the files of an interrupted import");
        }
    }
    if journal.app_installed {
        if let Ok(version) = journal.to.parse::<semver::Version>() {
            match state.remove_app(&rec.app, Some(&version)).await {
                Ok(_) | Err(StateError::NotFound(_)) => {}
                Err(e) => {
                    info!(app = %rec.app, %version, "kept the version an interrupted import installed: {e}")
                }
            }
        }
    }
    warn!(
        appspace = %rec.name,
        domain = %rec.domain,
        from = %journal.from,
        "the host stopped during an import: the half-made appspace was removed; import the file again"
    );
    Ok(())
}
