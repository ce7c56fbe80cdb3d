//! Backups taken by the host, never by the app (docs/backups.md): each
//! appspace's data directory goes into one restic repository under the
//! state directory, which only root can read (the appspaces' uids cannot
//! reach it), encrypted with a key made at the first backup. The format is
//! restic's own, so Debian's stock `restic` lists and restores it without
//! ds ([`restic`]).
//!
//! Consistency: a running sandbox is frozen (cgroup v2 freezer) while its
//! data is read and thawed after; on cgroup v1 (no freezer among ds's
//! controllers) it is stopped instead and kept from starting until the
//! backup is done; its next request starts it.

pub mod restic;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::appspace::Appspace;
pub use restic::{BackupError, Snapshot};

/// The host's backups.
#[derive(Debug)]
pub struct Backups {
    restic: restic::Restic,
    /// Serialises backups (restic locks the repository anyway; this keeps
    /// a second admin's request waiting rather than failing).
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Backups {
    /// Backups under `state_dir/backups`, made with the `restic` binary
    /// (`$DS_RESTIC`, else the PATH's).
    pub fn new(state_dir: &Path) -> Self {
        let binary = std::env::var_os("DS_RESTIC")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("restic"));
        Self {
            restic: restic::Restic::new(binary, state_dir.join("backups")),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// The repository's key (made now if there is none yet), for the
    /// admin to keep off the machine.
    pub async fn key(&self) -> Result<String, BackupError> {
        let _one = self.one_at_a_time.lock().await;
        self.restic.ensure_repository().await?;
        let file = self.restic.key_file();
        std::fs::read_to_string(&file).map_err(|source| BackupError::Io {
            what: "reading",
            path: file,
            source,
        })
    }

    /// Where the repository is and the file holding its key.
    pub fn location(&self) -> (PathBuf, PathBuf) {
        (self.restic.repository(), self.restic.key_file())
    }

    /// Backs up `appspace`'s data now: frozen while it is read (stopped on
    /// cgroup v1). Returns the snapshot and how the app was held still.
    pub async fn create(
        &self,
        appspace: &Arc<Appspace>,
        grace: std::time::Duration,
    ) -> Result<(Snapshot, &'static str), BackupError> {
        let _one = self.one_at_a_time.lock().await;
        self.restic.ensure_repository().await?;
        let (name, data) = (&appspace.config.name, &appspace.config.data_dir);
        match appspace.freeze(true).await {
            Ok(true) => {
                let taken = self.restic.backup(name, data).await;
                if let Err(e) = appspace.freeze(false).await {
                    tracing::error!(appspace = %name, error = %e, "thawing after the backup");
                }
                Ok((taken?, "frozen"))
            }
            // No freezer (cgroup v1), or not running: out of service while
            // read, so that nothing starts and writes meanwhile.
            Ok(false) => {
                let (was_running, taken) = appspace
                    .out_of_service(
                        grace,
                        "its data is being backed up",
                        self.restic.backup(name, data),
                    )
                    .await;
                Ok((
                    taken?,
                    if was_running {
                        "stopped"
                    } else {
                        "not running"
                    },
                ))
            }
            Err(e) => Err(BackupError::Freeze(e.to_string())),
        }
    }

    /// Reads every backup back and checks its integrity; a repository that
    /// does not exist yet is fine (nothing to check).
    pub async fn verify(&self) -> Result<usize, BackupError> {
        let _one = self.one_at_a_time.lock().await;
        if !self.restic.exists() {
            return Ok(0);
        }
        self.restic.check().await?;
        Ok(self.restic.snapshots(None).await?.len())
    }

    /// The snapshots of `appspace` (every appspace's if `None`), oldest
    /// first.
    pub async fn list(&self, appspace: Option<&str>) -> Result<Vec<Snapshot>, BackupError> {
        if !self.restic.exists() {
            return Ok(Vec::new());
        }
        self.restic.snapshots(appspace).await
    }
}

impl Backups {
    /// Puts the data of `snapshot` back into `appspace`'s data directory:
    /// the appspace is taken out of service, its current data backed up
    /// first (so nothing is lost), the snapshot restored beside it and
    /// checked, then swapped in; its next start hands the files to its
    /// uid. Returns the backup of the data it replaced.
    pub async fn restore(
        &self,
        appspace: &Arc<Appspace>,
        snapshot: &str,
        grace: std::time::Duration,
    ) -> Result<Snapshot, BackupError> {
        let _one = self.one_at_a_time.lock().await;
        let name = &appspace.config.name;
        let wanted = self
            .list(Some(name))
            .await?
            .into_iter()
            .find(|s| s.id == snapshot)
            .ok_or_else(|| BackupError::NoSuchSnapshot {
                snapshot: snapshot.to_owned(),
                appspace: name.clone(),
            })?;
        let data = appspace.config.data_dir.clone();
        appspace
            .out_of_service(grace, "its data is being restored", async {
                let safety = self.restic.backup(name, &data).await?;
                let staging = self.restic.restore_beside(&wanted, &data).await?;
                restic::swap_in(&staging, &data)?;
                Ok(safety)
            })
            .await
            .1
    }
}
