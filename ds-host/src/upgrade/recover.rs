//! At start-up, before anything serves: changes a killed host left half
//! done are undone, so every appspace is as it was before them or as it
//! is after them, never in between.

use tracing::{info, warn};

use super::Journal;
use crate::backup::Backups;
use crate::state::{AppspaceRecord, State, StateError};

/// Undoes what an interrupted upgrade or restore left: a data directory
/// moved aside by a restore is put back, a restore's staging removed, an
/// upgrade's journal rolled back (its backup restored; the version was
/// never changed). An appspace whose roll-back fails is marked broken.
/// Returns the appspaces rolled back, each with a line for its log.
pub async fn recover(
    state: &State,
    backups: &Backups,
) -> Result<Vec<(String, String)>, StateError> {
    let mut rolled_back = Vec::new();
    for rec in state.appspaces().await? {
        crate::backup::recover_swap(&rec.data_dir);
        let Some(journal) = &rec.pending else {
            continue;
        };
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
