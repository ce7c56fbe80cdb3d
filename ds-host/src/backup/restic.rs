//! Driving Debian's `restic` (the reference implementation of its format,
//! packaged by Debian; see docs/dependencies.md for why not a crate). It
//! runs as root with a clean environment naming only the repository, the
//! key file and a cache inside the backups directory; its JSON output is
//! read, never its human text. restic stores symbolic links as links and
//! FIFOs, sockets and devices as such without opening them, so a tree the
//! app controls cannot make it follow a link or block.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;

use super::target::{SshAccess, Target, TargetError};

/// Why a backup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// restic could not be run.
    #[error("running {binary}: {source} (install Debian's restic package)")]
    Spawn {
        /// The binary.
        binary: String,
        /// Why.
        source: std::io::Error,
    },
    /// restic ran and failed.
    #[error("restic {what} failed: {stderr}")]
    Failed {
        /// Which command.
        what: &'static str,
        /// What it said.
        stderr: String,
    },
    /// Its output was not what this version of ds reads.
    #[error("restic {what}: unexpected output: {why}")]
    Output {
        /// Which command.
        what: &'static str,
        /// What was wrong.
        why: String,
    },
    /// The backups directory or the key could not be made.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The repository's place or its SSH access is unusable.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// No such snapshot of that appspace.
    #[error("no backup {snapshot} of appspace {appspace}")]
    NoSuchSnapshot {
        /// The id asked for.
        snapshot: String,
        /// The appspace.
        appspace: String,
    },
    /// A restored tree holds what no data directory may.
    #[error("the backup holds {what} at {path}: refused, nothing changed")]
    Refused {
        /// What.
        what: &'static str,
        /// Where, inside the restored tree.
        path: PathBuf,
    },
    /// The appspace could not be held still.
    #[error("freezing the appspace: {0}")]
    Freeze(String),
}

/// One snapshot, as `dsctl backup list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// restic's short id.
    pub id: String,
    /// The appspace it is of.
    pub appspace: String,
    /// When it was taken (RFC 3339, restic's).
    pub time: String,
    /// The directory it holds.
    pub path: String,
    /// The app and version the appspace ran when it was taken (absent
    /// from backups made before ds recorded them).
    pub app: Option<String>,
    /// See `app`.
    pub version: Option<String>,
    /// Why it was taken when not on demand or by the schedule
    /// (`pre-upgrade`, `pre-restore`).
    pub reason: Option<String>,
}

/// What a new snapshot is labelled with (restic tags `key=value`).
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    /// The appspace.
    pub appspace: &'a str,
    /// Its app.
    pub app: &'a str,
    /// The version it runs.
    pub version: &'a str,
    /// Why, if not on demand or by the schedule.
    pub reason: Option<&'static str>,
}

impl Labels<'_> {
    fn tags(&self) -> Vec<String> {
        let mut tags = vec![
            tag(self.appspace),
            format!("app={}", self.app),
            format!("version={}", self.version),
        ];
        if let Some(r) = self.reason {
            tags.push(format!("reason={r}"));
        }
        tags
    }
}

/// The tag that names an appspace in a snapshot.
fn tag(appspace: &str) -> String {
    format!("appspace={appspace}")
}

/// A restic repository and the binary that reads it.
#[derive(Debug)]
pub struct Restic {
    binary: PathBuf,
    /// The key and restic's cache.
    dir: PathBuf,
    repository: Target,
    /// How an SFTP repository is reached.
    ssh: Option<SshAccess>,
    /// Once seen, a repository does not go away: asked once.
    seen: std::sync::atomic::AtomicBool,
}

#[derive(Deserialize)]
struct RawSnapshot {
    short_id: String,
    time: String,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
struct BackupLine {
    message_type: String,
    #[serde(default)]
    snapshot_id: Option<String>,
}

impl Restic {
    /// The repository at `repository` (`dir/repository` if `None`), its
    /// key in `dir/key`; an SFTP repository is reached with `ssh`
    /// (checked by [`Target::check_access`] before).
    pub fn new(
        binary: PathBuf,
        dir: PathBuf,
        repository: Option<Target>,
        ssh: Option<SshAccess>,
    ) -> Self {
        let repository = repository.unwrap_or_else(|| Target::Local(dir.join("repository")));
        Self {
            binary,
            dir,
            repository,
            ssh,
            seen: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The restic binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Where the repository is.
    pub fn repository(&self) -> &Target {
        &self.repository
    }

    /// The file holding its key.
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("key")
    }

    /// Whether the repository was made. A local one is looked at; a
    /// remote one is asked (`restic cat config`), and a server that cannot
    /// be reached is an error, never taken for an empty repository.
    pub async fn exists(&self) -> Result<bool, BackupError> {
        use std::sync::atomic::Ordering;
        if self.seen.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let seen = match &self.repository {
            Target::Local(dir) => dir.join("config").is_file(),
            Target::Sftp(_) => match self.run("cat config", &["cat", "config"]).await {
                Ok(_) => true,
                Err(BackupError::Failed { stderr, .. })
                    if stderr.contains("Is there a repository at the following location?") =>
                {
                    false
                }
                Err(e) => return Err(e),
            },
        };
        self.seen.store(seen, Ordering::Relaxed);
        Ok(seen)
    }

    /// Makes the backups directory (root only), the key (random, root
    /// only) and the repository, whichever is missing.
    pub async fn ensure_repository(&self) -> Result<(), BackupError> {
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| BackupError::Io { what, path, source }
        };
        if !self.dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(io("creating", &self.dir))?;
        }
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("securing", &self.dir))?;
        let key = self.key_file();
        if !key.is_file() {
            let mut bytes = [0u8; 32];
            let urandom = Path::new("/dev/urandom");
            std::io::Read::read_exact(
                &mut std::fs::File::open(urandom).map_err(io("opening", urandom))?,
                &mut bytes,
            )
            .map_err(io("reading", urandom))?;
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&key)
                .map_err(io("writing", &key))?;
            std::io::Write::write_all(&mut file, hex.as_bytes()).map_err(io("writing", &key))?;
            file.sync_all().map_err(io("writing", &key))?;
        }
        if !self.exists().await? {
            self.run("init", &["init"]).await?;
            self.seen.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// restic with this repository, its key and nothing else of ours in
    /// its environment.
    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.env_clear()
            .env("RESTIC_REPOSITORY", self.repository.restic_repository())
            .env("RESTIC_PASSWORD_FILE", self.key_file())
            .env("RESTIC_CACHE_DIR", self.dir.join("cache"))
            .env("PATH", "/usr/bin:/bin")
            .env("TZ", "UTC")
            .stdin(Stdio::null());
        if let Some(ssh) = self
            .ssh
            .as_ref()
            .and_then(|a| self.repository.sftp_command(a))
        {
            cmd.arg("-o").arg(format!("sftp.command={ssh}"));
        }
        cmd
    }

    /// `restic dump --archive tar` of the data in `snapshot`, its output
    /// piped (entries named by the snapshot's absolute path, without the
    /// leading `/`); the caller reads it and waits for the child.
    pub fn dump(&self, snapshot: &Snapshot) -> Result<tokio::process::Child, BackupError> {
        self.command()
            .args(["dump", "--archive", "tar", &snapshot.id, &snapshot.path])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| BackupError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })
    }

    async fn run(&self, what: &'static str, args: &[&str]) -> Result<Vec<u8>, BackupError> {
        // restic refuses while a conflicting lock is there, even that of a
        // restic killed with its host (a power cut) or by the OOM killer:
        // check and forget refuse on any lock, a backup on an exclusive
        // one. `unlock` removes only stale locks (this machine's whose
        // process is gone, or older than 30 minutes), and ours never
        // overlap (`Backups` runs one at a time): on a refusal for a lock,
        // it runs and the command is tried once more.
        let ran = match self.run_once(what, args).await {
            Err(BackupError::Failed { stderr, .. }) if refused_for_a_lock(&stderr) => {
                self.run_once("unlock", &["unlock"]).await?;
                self.run_once(what, args).await
            }
            other => other,
        };
        match ran {
            // restic says only that the SFTP session did not start, and
            // loses ssh's own reason when it exits first: ssh, run the
            // same way, says why (a host key that does not match, a key
            // refused, no route).
            Err(BackupError::Failed { what, stderr })
                if stderr.contains("unable to start the sftp session") =>
            {
                let why = self.ssh_says().await;
                Err(BackupError::Failed {
                    what,
                    stderr: match why {
                        Some(why) => format!("{stderr} / ssh: {why}"),
                        None => stderr,
                    },
                })
            }
            other => other,
        }
    }

    /// The last line ssh prints when run as restic runs it, if it fails.
    async fn ssh_says(&self) -> Option<String> {
        let command = self
            .ssh
            .as_ref()
            .and_then(|a| self.repository.sftp_command(a))?;
        let mut words = command.split_whitespace();
        let program = words.next()?;
        let run = tokio::process::Command::new(program)
            .args(words)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(30), run)
            .await
            .ok()?
            .ok()?;
        if out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
    }

    async fn run_once(&self, what: &'static str, args: &[&str]) -> Result<Vec<u8>, BackupError> {
        let out =
            self.command()
                .args(args)
                .output()
                .await
                .map_err(|source| BackupError::Spawn {
                    binary: self.binary.display().to_string(),
                    source,
                })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            return Err(BackupError::Failed {
                what,
                stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
            });
        }
        Ok(out.stdout)
    }

    /// Backs up `data` (an appspace's data directory) for `appspace`,
    /// the snapshot dated `at` (now if `None`).
    pub async fn backup_at(
        &self,
        labels: &Labels<'_>,
        data: &Path,
        at: Option<std::time::SystemTime>,
    ) -> Result<Snapshot, BackupError> {
        let appspace = labels.appspace;
        let data_arg = data.to_string_lossy().into_owned();
        let tags = labels.tags();
        // restic reads --time in the zone of TZ, which is UTC here.
        let time = at.map(|t| {
            humantime::format_rfc3339_seconds(t)
                .to_string()
                .trim_end_matches('Z')
                .replace('T', " ")
        });
        let mut args = vec!["backup", "--json", "--host", "ds", "--one-file-system"];
        for t in &tags {
            args.extend(["--tag", t]);
        }
        if let Some(time) = &time {
            args.extend(["--time", time]);
        }
        args.push(&data_arg);
        let out = self.run("backup", &args).await?;
        let text = String::from_utf8_lossy(&out);
        let id = text
            .lines()
            .filter_map(|l| serde_json::from_str::<BackupLine>(l).ok())
            .find(|l| l.message_type == "summary")
            .and_then(|l| l.snapshot_id)
            .ok_or_else(|| BackupError::Output {
                what: "backup",
                why: "no summary with a snapshot id".into(),
            })?;
        let taken = self.snapshots(Some(appspace)).await?;
        taken
            .into_iter()
            .find(|s| id.starts_with(&s.id))
            .ok_or_else(|| BackupError::Output {
                what: "backup",
                why: format!("snapshot {id} is not listed"),
            })
    }

    /// The snapshots of `appspace` (all if `None`), oldest first.
    pub async fn snapshots(&self, appspace: Option<&str>) -> Result<Vec<Snapshot>, BackupError> {
        let mut args = vec!["snapshots".to_owned(), "--json".to_owned()];
        if let Some(a) = appspace {
            args.extend(["--tag".to_owned(), tag(a)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run("snapshots", &args).await?;
        let raw: Vec<RawSnapshot> =
            serde_json::from_slice(&out).map_err(|e| BackupError::Output {
                what: "snapshots",
                why: e.to_string(),
            })?;
        Ok(raw
            .into_iter()
            .filter_map(|s| {
                let label = |key: &str| {
                    s.tags
                        .iter()
                        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
                        .map(str::to_owned)
                };
                Some(Snapshot {
                    appspace: label("appspace")?,
                    app: label("app"),
                    version: label("version"),
                    reason: label("reason"),
                    id: s.short_id,
                    time: s.time,
                    path: s.paths.first().cloned().unwrap_or_default(),
                })
            })
            .collect())
    }
}

impl Restic {
    /// Restores `snapshot` (of `data`) into a fresh directory beside
    /// `data` (same file system, so it can be renamed in) and checks what
    /// it holds ([`check_tree`]); returns that directory, holding the
    /// data directory's contents.
    pub async fn restore_beside(
        &self,
        snapshot: &Snapshot,
        data: &Path,
    ) -> Result<PathBuf, BackupError> {
        let parent = data.parent().unwrap_or(data);
        let staging = parent.join(".restoring");
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| BackupError::Io { what, path, source }
        };
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io("clearing", &staging))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(io("creating", &staging))?;
        inherit_project(data, &staging);
        let target = staging.to_string_lossy().into_owned();
        let include = snapshot.path.clone();
        let restored = self
            .run(
                "restore",
                &[
                    "restore",
                    &snapshot.id,
                    "--target",
                    &target,
                    "--include",
                    &include,
                ],
            )
            .await;
        let inner = staging.join(snapshot.path.trim_start_matches('/'));
        let checked = restored.and_then(|_| {
            if !inner.is_dir() {
                return Err(BackupError::Output {
                    what: "restore",
                    why: format!("{} was not restored", snapshot.path),
                });
            }
            check_tree(&inner, Path::new(""))
        });
        if let Err(e) = checked {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        Ok(inner)
    }
}

/// Refuses device nodes, and strips set-id bits, in a restored tree (a
/// data directory never holds devices: the sandbox mounts it `nodev` and
/// an app cannot make one; a repository that says otherwise was tampered
/// with). Never follows links.
fn check_tree(dir: &Path, rel: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::FileTypeExt;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Io {
            what: "checking",
            path,
            source,
        }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let kind = meta.file_type();
        let here = rel.join(entry.file_name());
        if kind.is_block_device() || kind.is_char_device() {
            return Err(BackupError::Refused {
                what: "a device node",
                path: here,
            });
        }
        if !kind.is_symlink() && meta.permissions().mode() & 0o6000 != 0 {
            let mode = meta.permissions().mode() & !0o6000;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(io(&path))?;
        }
        if kind.is_dir() {
            check_tree(&path, &here)?;
        }
    }
    Ok(())
}

/// Puts `restored` where `data` is: the old data moves aside, the restored
/// tree is renamed in (one file system: no copy), the old one is removed
/// (a backup of it was taken first). The restored tree's owner is set by
/// the sandbox's next start, which hands the data directory to its uid.
pub fn swap_in(restored: &Path, data: &Path) -> Result<(), BackupError> {
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Io { what, path, source }
    };
    let parent = data.parent().unwrap_or(data);
    let old = parent.join(".replaced");
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io("clearing", &old))?;
    }
    std::fs::rename(data, &old).map_err(io("moving aside", data))?;
    if let Err(e) = std::fs::rename(restored, data) {
        // Put the old data back: nothing changed.
        let _ = std::fs::rename(&old, data);
        return Err(io("moving in", restored)(e));
    }
    let _ = std::fs::remove_dir_all(&old);
    if let Some(staging) = restored
        .ancestors()
        .find(|a| a.file_name() == Some(".restoring".as_ref()))
    {
        let _ = std::fs::remove_dir_all(staging);
    }
    Ok(())
}

/// Finishes or undoes a [`swap_in`] a killed host left half done: data
/// moved aside with nothing in its place is put back (as before the
/// restore); the old data left beside restored data is removed (as
/// after it); a staging directory is removed.
pub fn recover_swap(data: &Path) {
    let parent = data.parent().unwrap_or(data);
    let old = parent.join(".replaced");
    if std::fs::symlink_metadata(&old).is_ok() {
        if std::fs::symlink_metadata(data).is_err() {
            if let Err(e) = std::fs::rename(&old, data) {
                tracing::error!(data = %data.display(), error = %e, "putting back data moved aside by an interrupted restore");
            } else {
                tracing::warn!(data = %data.display(), "an interrupted restore was undone");
            }
        } else {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
    let staging = parent.join(".restoring");
    if std::fs::symlink_metadata(&staging).is_ok() {
        let _ = std::fs::remove_dir_all(&staging);
    }
}

impl Restic {
    /// Reads the whole repository back and checks it (`restic check
    /// --read-data`): Ok, or what restic found wrong.
    pub async fn check(&self) -> Result<(), BackupError> {
        self.run("check", &["check", "--read-data"]).await.map(drop)
    }
}

/// A backup of the host's own state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    /// restic's short id.
    pub id: String,
    /// When it was taken (RFC 3339, restic's).
    pub time: String,
    /// The files and directories it holds.
    pub paths: Vec<String>,
}

/// The tag of backups of the host's own state.
pub const HOST_STATE_TAG: &str = "host-state";

impl Restic {
    /// Backs up `paths` as the host's state, dated now.
    pub async fn backup_host(&self, paths: &[PathBuf]) -> Result<HostSnapshot, BackupError> {
        let paths: Vec<String> = paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let mut args = vec!["backup", "--json", "--host", "ds", "--tag", HOST_STATE_TAG];
        args.extend(paths.iter().map(String::as_str));
        let out = self.run("backup", &args).await?;
        let text = String::from_utf8_lossy(&out);
        let id = text
            .lines()
            .filter_map(|l| serde_json::from_str::<BackupLine>(l).ok())
            .find(|l| l.message_type == "summary")
            .and_then(|l| l.snapshot_id)
            .ok_or_else(|| BackupError::Output {
                what: "backup",
                why: "no summary with a snapshot id".into(),
            })?;
        self.host_snapshots()
            .await?
            .into_iter()
            .find(|s| id.starts_with(&s.id))
            .ok_or_else(|| BackupError::Output {
                what: "backup",
                why: format!("snapshot {id} is not listed"),
            })
    }

    /// The backups of the host's state, oldest first.
    pub async fn host_snapshots(&self) -> Result<Vec<HostSnapshot>, BackupError> {
        let out = self
            .run(
                "snapshots",
                &["snapshots", "--json", "--tag", HOST_STATE_TAG],
            )
            .await?;
        let raw: Vec<RawSnapshot> =
            serde_json::from_slice(&out).map_err(|e| BackupError::Output {
                what: "snapshots",
                why: e.to_string(),
            })?;
        Ok(raw
            .into_iter()
            .map(|s| HostSnapshot {
                id: s.short_id,
                time: s.time,
                paths: s.paths,
            })
            .collect())
    }

    /// Restores all of snapshot `id` under `target` (absolute paths kept
    /// below it).
    pub async fn restore_all(&self, id: &str, target: &Path) -> Result<(), BackupError> {
        let target = target.to_string_lossy().into_owned();
        self.run("restore", &["restore", id, "--target", &target])
            .await
            .map(drop)
    }

    /// Applies the retention `keep` to the host's state backups.
    pub async fn forget_host(&self, keep: [u32; 4]) -> Result<(), BackupError> {
        let keep: Vec<String> = keep.iter().map(u32::to_string).collect();
        let args = [
            "forget",
            "--tag",
            HOST_STATE_TAG,
            "--host",
            "ds",
            "--group-by",
            "host,tags",
            "--keep-hourly",
            &keep[0],
            "--keep-daily",
            &keep[1],
            "--keep-weekly",
            &keep[2],
            "--keep-monthly",
            &keep[3],
            "--prune",
        ];
        self.run("forget", &args).await.map(drop)
    }

    /// Removes snapshot `id` and what no other snapshot uses.
    pub async fn forget_one(&self, id: &str) -> Result<(), BackupError> {
        self.run("forget", &["forget", id, "--prune"])
            .await
            .map(drop)
    }

    /// Applies the retention `keep` (hourly, daily, weekly, monthly) to
    /// `appspace`'s snapshots and removes what no snapshot uses any more.
    pub async fn forget(&self, appspace: &str, keep: [u32; 4]) -> Result<(), BackupError> {
        let tag = tag(appspace);
        let keep: Vec<String> = keep.iter().map(u32::to_string).collect();
        let args = [
            "forget",
            "--tag",
            &tag,
            "--host",
            "ds",
            "--keep-hourly",
            &keep[0],
            "--keep-daily",
            &keep[1],
            "--keep-weekly",
            &keep[2],
            "--keep-monthly",
            &keep[3],
            "--prune",
        ];
        self.run("forget", &args).await.map(drop)
    }
}

/// Puts `staging` into the disk-quota project of `data` (when it has one)
/// before anything is restored into it, so that what is restored counts
/// to the appspace's quota from the start (docs/quotas.md). Best effort:
/// file systems without project ids have nothing to inherit.
pub(crate) fn inherit_project(data: &Path, staging: &Path) {
    use std::os::fd::AsFd;
    let open = |p: &Path| {
        rustix::fs::open(
            p,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok()
    };
    let (Some(d), Some(s)) = (open(data), open(staging)) else {
        return;
    };
    if let Ok(id) = ds_sandbox::sys::project_id(d.as_fd()) {
        if id != 0 {
            let _ = ds_sandbox::sys::set_project_id(s.as_fd(), id, true);
        }
    }
}

/// Whether restic's complaint is about a lock in the repository.
fn refused_for_a_lock(stderr: &str) -> bool {
    stderr.contains("already locked")
        || stderr.contains("unable to create lock")
        || stderr.contains("`unlock` command")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restic_lock_refusals_are_recognised() {
        // restic 0.14's words, as `run` keeps them (the last lines).
        for said in [
            "unable to create lock in backend: repository is already locked exclusively by PID 4242 on host by root (UID 0, GID 0) / lock was created at 2026-12-04 13:39:39 (4.2s ago) / storage ID 3d5507de / the `unlock` command can be used to remove stale locks",
            "lock was created at 2026-12-04 13:39:39 (4.240999481s ago) / storage ID 3d5507de / the `unlock` command can be used to remove stale locks",
        ] {
            assert!(refused_for_a_lock(said), "{said}");
        }
        assert!(!refused_for_a_lock("Fatal: wrong password or no key found"));
        assert!(!refused_for_a_lock(
            "Is there a repository at the following location?"
        ));
    }

    #[test]
    fn a_half_done_swap_is_undone_and_a_finished_one_tidied() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Killed between the renames: the data was moved aside, nothing
        // in its place. It goes back (as before the restore).
        std::fs::create_dir(dir.path().join(".replaced")).unwrap();
        std::fs::write(dir.path().join(".replaced/file"), "old").unwrap();
        std::fs::create_dir_all(dir.path().join(".restoring/x")).unwrap();
        recover_swap(&data);
        assert_eq!(std::fs::read_to_string(data.join("file")).unwrap(), "old");
        assert!(!dir.path().join(".replaced").exists());
        assert!(!dir.path().join(".restoring").exists());
        // Killed after them: the restored data stays, the old goes (as after).
        std::fs::create_dir(dir.path().join(".replaced")).unwrap();
        std::fs::write(dir.path().join(".replaced/file"), "older").unwrap();
        recover_swap(&data);
        assert_eq!(std::fs::read_to_string(data.join("file")).unwrap(), "old");
        assert!(!dir.path().join(".replaced").exists());
        // Nothing half done: nothing changes.
        recover_swap(&data);
        assert_eq!(std::fs::read_to_string(data.join("file")).unwrap(), "old");
    }
}
