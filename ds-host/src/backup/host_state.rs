//! Backups of the host's own state, so that a dead disk is recoverable:
//! a consistent copy of the state database, the installed apps, and the
//! files the configuration names (itself, the certificate and key), in
//! the same repository as the appspaces' data; and the restore of all of
//! it into an empty state directory on a new machine, given the
//! repository and its key (`ds-host --restore-from`).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::restic::{self, HostSnapshot, Restic};
use super::{BackupError, Backups};
use crate::state::State;

/// Where the database copy is made, under the backups directory.
const COPY_DIR: &str = "host-state";

impl Backups {
    /// Backs up the host's state now (and applies the retention to those
    /// backups).
    pub async fn backup_host(&self) -> Result<HostSnapshot, BackupError> {
        let _one = self.one_at_a_time.lock().await;
        self.backup_host_locked().await
    }

    pub(super) async fn backup_host_locked(&self) -> Result<HostSnapshot, BackupError> {
        let Some(host) = &self.host_state else {
            return Err(BackupError::Output {
                what: "backup",
                why: "this host was not told what its state is".into(),
            });
        };
        self.restic.ensure_repository().await?;
        let copy_dir = self.dir.join(COPY_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&copy_dir)
            .map_err(|source| BackupError::Io {
                what: "creating",
                path: copy_dir.clone(),
                source,
            })?;
        host.state
            .copy_to(&copy_dir.join("state.db"))
            .await
            .map_err(|e| BackupError::Output {
                what: "backup",
                why: e.to_string(),
            })?;
        let mut paths = vec![copy_dir, self.state_dir.join("apps")];
        paths.extend(host.files.iter().filter(|f| f.exists()).cloned());
        let taken = self.restic.backup_host(&paths).await?;
        self.restic.forget_host(self.schedule.keep).await?;
        Ok(taken)
    }
}

/// What a restore on a new machine did.
#[derive(Debug, Default)]
pub struct HostRestored {
    /// The backup of the host's state used.
    pub snapshot: String,
    /// When it was taken.
    pub taken: String,
    /// Appspaces whose data was restored, with the backup used.
    pub appspaces: Vec<(String, String)>,
    /// Appspaces recorded without any backup of their data.
    pub without_data: Vec<String>,
    /// Files the configuration named (its own file, certificates), put
    /// under `restored/` for the admin to move into place.
    pub files: Vec<PathBuf>,
}

/// Restores the newest backup of a host's state in `repository` (opened
/// with the key in `key_file`, an SFTP one reached with `ssh`) into
/// `state_dir`, which must not hold a
/// host yet, then each appspace's newest data. Nothing in `state_dir` is
/// overwritten; files outside it are put under `state_dir/restored/`.
pub async fn restore_host(
    binary: PathBuf,
    repository: &super::Target,
    ssh: Option<super::SshAccess>,
    key_file: &Path,
    state_dir: &Path,
    disks: &crate::disk::Disks,
) -> Result<HostRestored, BackupError> {
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Io { what, path, source }
    };
    let db_file = state_dir.join("state.db");
    if db_file.exists() {
        return Err(BackupError::Refused {
            what: "a host already (state.db): restore into an empty state directory",
            path: state_dir.to_owned(),
        });
    }
    repository.check_access(ssh.as_ref())?;
    let key = std::fs::read_to_string(key_file).map_err(io("reading", key_file))?;
    let backups_dir = state_dir.join("backups");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&backups_dir)
        .map_err(io("creating", &backups_dir))?;
    let restic = Restic::new(binary, backups_dir.clone(), Some(repository.clone()), ssh);
    let key_copy = restic.key_file();
    if !key_copy.exists() {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&key_copy)
            .map_err(io("writing", &key_copy))?;
        std::io::Write::write_all(&mut file, key.trim().as_bytes())
            .map_err(io("writing", &key_copy))?;
    }
    let newest = restic
        .host_snapshots()
        .await?
        .into_iter()
        .max_by(|a, b| a.time.cmp(&b.time))
        .ok_or_else(|| BackupError::Output {
            what: "snapshots",
            why: format!(
                "{} holds no backup of a host's state (dsctl backup host takes one)",
                repository
            ),
        })?;
    let staging = state_dir.join(".restoring-host");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io("clearing", &staging))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io("creating", &staging))?;
    restic.restore_all(&newest.id, &staging).await?;
    let inside = |p: &str| staging.join(p.trim_start_matches('/'));
    // The state directory it was taken from: the parent of the backups
    // directory that held the database copy.
    let copy = newest
        .paths
        .iter()
        .find(|p| p.ends_with(&format!("/backups/{COPY_DIR}")))
        .ok_or_else(|| BackupError::Output {
            what: "restore",
            why: "the backup holds no copy of the state database".into(),
        })?;
    let old_state = PathBuf::from(copy.trim_end_matches(&format!("/backups/{COPY_DIR}")));
    let apps = old_state.join("apps").to_string_lossy().into_owned();
    let mut restored = HostRestored {
        snapshot: newest.id.clone(),
        taken: newest.time.clone(),
        ..HostRestored::default()
    };
    for path in &newest.paths {
        let from = inside(path);
        if *path == *copy || *path == apps {
            continue;
        }
        let to = state_dir
            .join("restored")
            .join(path.trim_start_matches('/'));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        std::fs::rename(&from, &to).map_err(io("moving into place", &from))?;
        restored.files.push(to);
    }
    let apps_to = state_dir.join("apps");
    if inside(&apps).exists() {
        if apps_to.exists() {
            std::fs::remove_dir(&apps_to).map_err(|_| BackupError::Refused {
                what: "installed apps already",
                path: apps_to.clone(),
            })?;
        }
        std::fs::rename(inside(&apps), &apps_to).map_err(io("moving into place", &apps_to))?;
    }
    let db_copy = inside(copy).join("state.db");
    State::rebase(&db_copy, &old_state, state_dir)
        .await
        .map_err(|e| BackupError::Output {
            what: "restore",
            why: e.to_string(),
        })?;
    // Last: a state.db in place is what says a host lives here.
    std::fs::rename(&db_copy, &db_file).map_err(io("moving into place", &db_file))?;
    let _ = std::fs::remove_dir_all(&staging);
    let state = State::open(state_dir)
        .await
        .map_err(|e| BackupError::Output {
            what: "restore",
            why: format!("opening the restored state: {e}"),
        })?;
    let taken = restic.snapshots(None).await?;
    for rec in state.appspaces().await.map_err(|e| BackupError::Output {
        what: "restore",
        why: e.to_string(),
    })? {
        // This machine's way of limiting disks (the old machine's may not
        // be available here), made ready before the data goes in.
        let mut rec = rec;
        if rec.disk_kind != disks.kind() {
            let home = rec.home();
            rec.disk_kind = disks.kind();
            rec.data_dir = disks.data_dir(&home);
            state
                .set_disk_layout(&rec.name, rec.disk_kind, &rec.data_dir)
                .await
                .map_err(|e| BackupError::Output {
                    what: "restore",
                    why: e.to_string(),
                })?;
        }
        if rec.disk_bytes == 0 && disks.kind() != crate::state::DiskKind::None {
            rec.disk_bytes = disks.default_bytes();
            let _ = state.set_disk_limit(&rec.name, rec.disk_bytes).await;
        }
        let Some(snapshot) = taken
            .iter()
            .filter(|s| s.appspace == rec.name)
            .max_by(|a, b| a.time.cmp(&b.time))
        else {
            restored.without_data.push(rec.name.clone());
            continue;
        };
        disks.attach(&rec).await.map_err(|e| BackupError::Output {
            what: "restore",
            why: format!("making the disk of {}: {e}", rec.name),
        })?;
        let staged = restic.restore_beside(snapshot, &rec.data_dir).await?;
        if rec.data_dir.exists() {
            restic::swap_in(&staged, &rec.data_dir)?;
        } else {
            std::fs::rename(&staged, &rec.data_dir)
                .map_err(io("moving into place", &rec.data_dir))?;
            restic::recover_swap(&rec.data_dir);
        }
        std::fs::set_permissions(&rec.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("securing", &rec.data_dir))?;
        // Data of another version than the state recorded: that version
        // comes back with it, when installed.
        if let Some(v) = snapshot.version.as_ref().filter(|v| **v != rec.version) {
            if let Ok(version) = v.parse::<semver::Version>() {
                let _ = state.set_version(&rec.name, &version).await;
            }
        }
        // The host mounts it again at its start (the restore is a command
        // of its own).
        let _ = disks.detach(&rec).await;
        restored
            .appspaces
            .push((rec.name.clone(), snapshot.id.clone()));
    }
    Ok(restored)
}
