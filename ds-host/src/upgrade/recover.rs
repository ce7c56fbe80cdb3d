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
        // A half-made import goes whatever state its disk is in.
        if let Ok(j) = serde_json::from_str::<Journal>(journal) {
            if j.op == super::IMPORT {
                unimport(state, disks, &rec, &j).await?;
                continue;
            }
        }
        if rec
            .broken
            .as_deref()
            .is_some_and(|b| b.starts_with(crate::disk::BROKEN))
        {
            // Its data directory is not its data (the image is not
            // mounted): the roll-back waits for a start with its disk.
            warn!(appspace = %rec.name, "an interrupted change waits for its disk to be ready");
            continue;
        }
        match roll_back(backups, &rec, journal).await {
            Ok(what) => {
                state.set_pending(&rec.name, None).await?;
                if rec.broken.is_some() {
                    // Broken by an undo that failed at the time: its data
                    // is as it was before the change now.
                    state.set_broken(&rec.name, None).await?;
                }
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::backup::Schedule;
    use crate::disk::Wanted;
    use crate::package::PackageLimits;
    use crate::state::Storage;

    fn journal(op: &str) -> String {
        serde_json::to_string(&Journal {
            op: op.into(),
            from: "elsewhere.example".into(),
            to: "1.0.0".into(),
            backup: "0123abcd".into(),
            app_installed: true,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_half_made_import_is_removed_and_a_change_on_an_unready_disk_waits() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("s");
        let state = State::open(&s).await.unwrap();
        let pkg = dir.path().join("pkg");
        std::fs::create_dir_all(pkg.join("bin")).unwrap();
        std::fs::write(
            pkg.join("ds-app.toml"),
            "name = \"imp\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"bin/app\"\n",
        )
        .unwrap();
        std::fs::write(pkg.join("bin/app"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(pkg.join("bin/app"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        state
            .install(&pkg, &PackageLimits::default())
            .await
            .unwrap();
        let version: semver::Version = "1.0.0".parse().unwrap();
        let disks = Disks::detect(Wanted::Off, &s.join("appspaces"), 1 << 30).unwrap();
        for name in ["half", "waiting"] {
            let data = s.join("appspaces").join(name).join("data");
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("file"), name).unwrap();
            state
                .create_appspace(
                    name,
                    &format!("{name}.localhost"),
                    "imp",
                    &version,
                    64 << 20,
                    Storage {
                        data_dir: &data,
                        disk: (disks.kind(), 1 << 30),
                        pending: None,
                    },
                )
                .await
                .unwrap();
        }
        state
            .set_pending("half", Some(&journal(crate::upgrade::IMPORT)))
            .await
            .unwrap();
        // An upgrade killed half way whose appspace's disk image did not
        // mount at this start: rolling back would write into the empty
        // mount point, not its data.
        state
            .set_pending("waiting", Some(&journal("upgrade")))
            .await
            .unwrap();
        let unready = format!("{}losetup failed", crate::disk::BROKEN);
        state.set_broken("waiting", Some(&unready)).await.unwrap();

        let backups = Backups::new(&s, Schedule::default());
        let rolled = recover(&state, &backups, &disks).await.unwrap();
        assert!(rolled.is_empty(), "{rolled:?}");
        let left: Vec<String> = state
            .appspaces()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(left, ["waiting"]);
        assert!(!s.join("appspaces/half").exists());
        // The version the import installed stays while another uses it.
        assert!(state.has_version("imp", &version).await.unwrap());
        let waiting = state.appspace("waiting").await.unwrap();
        assert_eq!(
            waiting.pending.as_deref(),
            Some(journal("upgrade").as_str())
        );
        assert_eq!(waiting.broken.as_deref(), Some(unready.as_str()));
        assert_eq!(
            std::fs::read_to_string(waiting.data_dir.join("file")).unwrap(),
            "waiting"
        );
    }
}
