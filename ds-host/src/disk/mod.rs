//! Appspaces' disk limits, enforced by the kernel (docs/quotas.md): the
//! app gets `EDQUOT` or `ENOSPC` at its limit while the others write on.
//!
//! Two ways, chosen once at start-up ([`Disks::detect`]) for new
//! appspaces and recorded per appspace ([`DiskKind`]), so that an appspace
//! keeps the way it was made with:
//! - [`project`]: the file system's project quotas (ext4 or xfs mounted
//!   with `prjquota`), the project being the appspace's host uid. Nothing
//!   is copied or mounted; the limit changes at once either way.
//! - [`image`]: where the file system has no project quotas (a stock
//!   Debian install), a file system of the appspace's own in a sparse
//!   image file under its home, loop-mounted by the host, the data
//!   directory inside it.
//!
//! Entry points, called from the host's start-up ([`Disks::attach`], for
//! every appspace before anything serves), appspace creation
//! ([`Disks::attach`] too: it makes what is missing), `limits --disk`
//! ([`Disks::resize`]), `show` ([`Disks::usage`]) and removal
//! ([`Disks::release`]).

pub(crate) mod image;
mod mountinfo;
pub(crate) mod project;

use std::path::{Path, PathBuf};

use crate::state::{AppspaceRecord, DiskKind};

/// An appspace's data gets this much unless its admin says otherwise.
pub const DEFAULT_DISK: u64 = 4 << 30;

/// Why an appspace whose disk could not be made ready is broken (its data
/// directory must not be written while its image is not mounted); found
/// at a later start, the disk is tried again.
pub const BROKEN: &str = "its disk could not be made ready: ";

/// What the configuration asks for (`[appspaces] disk_quota`; dev:
/// `--disk-quota`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Wanted {
    /// Project quotas where the file system has them, else images.
    Auto,
    /// Project quotas, or refuse to start.
    Project,
    /// Images, or refuse to start.
    Image,
    /// No disk limits.
    Off,
}

/// Why a disk could not be set up, changed or measured.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A system call on a path failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A program (mkfs.ext4, mount, resize2fs...) failed.
    #[error("{program} on {}: {detail}", path.display())]
    Tool {
        /// The program.
        program: &'static str,
        /// What it ran on.
        path: PathBuf,
        /// Its exit status and what it said.
        detail: String,
    },
    /// The way asked for is not available here.
    #[error("disk quotas: {0}")]
    Unavailable(String),
    /// A limit below what the appspace uses already.
    #[error("the appspace uses {used} bytes already: a disk limit of {limit} bytes would leave it no room")]
    BelowUse {
        /// In use.
        used: u64,
        /// Asked for.
        limit: u64,
    },
    /// A disk image's file system cannot shrink that far.
    #[error("its file system cannot shrink below {} MiB (resize2fs's estimate of what it needs)", smallest.div_ceil(1 << 20))]
    TooSmall {
        /// Bytes resize2fs asks for at least.
        smallest: u64,
    },
    /// Resizing this image needs the appspace stopped (and why).
    #[error("resizing this disk image needs the appspace stopped ({0})")]
    Running(String),
    /// Handing the data to its project failed.
    #[error(transparent)]
    Walk(#[from] ds_sandbox::data_dir::DataDirError),
    /// The appspace's limit is not enforced.
    #[error("disk limits are not enforced for this appspace ({0})")]
    NotEnforced(String),
}

pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DiskError {
    let path = path.to_owned();
    move |source| DiskError::Io { what, path, source }
}

/// The host's way of limiting new appspaces' disks.
#[derive(Debug, Clone)]
pub struct Disks {
    kind: DiskKind,
    /// Why new appspaces get no limit, when they get none.
    why_none: Option<String>,
    default_bytes: u64,
}

impl Disks {
    /// Chooses the way for appspaces under `appspaces_dir` (created if
    /// missing) as `wanted` says; an explicit way that is not available
    /// is an error.
    pub fn detect(
        wanted: Wanted,
        appspaces_dir: &Path,
        default_bytes: u64,
    ) -> Result<Self, DiskError> {
        std::fs::create_dir_all(appspaces_dir).map_err(io("creating", appspaces_dir))?;
        let with = |kind, why_none| Self {
            kind,
            why_none,
            default_bytes,
        };
        match wanted {
            Wanted::Off => Ok(with(DiskKind::None, Some("turned off".into()))),
            Wanted::Project => project::available(appspaces_dir)
                .map(|()| with(DiskKind::Project, None))
                .map_err(DiskError::Unavailable),
            Wanted::Image => image::available()
                .map(|()| with(DiskKind::Image, None))
                .map_err(DiskError::Unavailable),
            Wanted::Auto => Ok(match project::available(appspaces_dir) {
                Ok(()) => with(DiskKind::Project, None),
                Err(no_project) => match image::available() {
                    Ok(()) => with(DiskKind::Image, None),
                    Err(no_image) => {
                        with(DiskKind::None, Some(format!("{no_project}; {no_image}")))
                    }
                },
            }),
        }
    }

    /// The way new appspaces get.
    pub fn kind(&self) -> DiskKind {
        self.kind
    }

    /// The limit new appspaces get.
    pub fn default_bytes(&self) -> u64 {
        self.default_bytes
    }

    /// For `dsctl status`.
    pub fn describe(&self) -> String {
        match (&self.kind, &self.why_none) {
            (DiskKind::Project, _) => "project quota".into(),
            (DiskKind::Image, _) => "disk image".into(),
            (DiskKind::None, why) => format!("none ({})", why.as_deref().unwrap_or("off")),
        }
    }

    /// Where a new appspace with home `home` keeps its data.
    pub fn data_dir(&self, home: &Path) -> PathBuf {
        match self.kind {
            DiskKind::Image => home.join(image::MOUNT).join("data"),
            _ => home.join("data"),
        }
    }

    /// Makes the appspace's disk ready, creating what is missing: its
    /// data directory, its project and limit, or its image, file system
    /// and mount. Idempotent: run for every appspace at start-up.
    pub async fn attach(&self, rec: &AppspaceRecord) -> Result<(), DiskError> {
        match rec.disk_kind {
            DiskKind::None => {
                std::fs::create_dir_all(&rec.data_dir).map_err(io("creating", &rec.data_dir))
            }
            DiskKind::Project => project::attach(&rec.data_dir, rec.uid, rec.disk_bytes).await,
            DiskKind::Image => image::attach(&rec.home(), &rec.data_dir, rec.disk_bytes).await,
        }
    }

    /// At start-up, nothing else running: removes the directory a move
    /// onto a disk image copied from ([`Disks::attach`] for the new way,
    /// then the record, then this directory), when the host was killed
    /// after the move was recorded and before the directory went. An
    /// image appspace has no other directory there.
    pub fn tidy_finished_move(&self, rec: &AppspaceRecord) -> Result<(), DiskError> {
        let moved_from = rec.home().join("data");
        if rec.disk_kind != DiskKind::Image || moved_from == rec.data_dir || !moved_from.exists() {
            return Ok(());
        }
        tracing::warn!(path = %moved_from.display(), "removing the data directory a finished move onto a disk image left");
        std::fs::remove_dir_all(&moved_from).map_err(io("removing", &moved_from))
    }

    /// Changes the appspace's limit to `bytes`; refused below what it
    /// uses. A disk image grows while the app runs where the kernel allows
    /// it, and otherwise (and to shrink) only with the appspace stopped
    /// (`stopped`, the caller holding it so): [`DiskError::Running`] asks
    /// for that.
    pub async fn resize(
        &self,
        rec: &AppspaceRecord,
        bytes: u64,
        stopped: bool,
    ) -> Result<(), DiskError> {
        match rec.disk_kind {
            DiskKind::None => Err(DiskError::NotEnforced(
                self.why_none
                    .clone()
                    .unwrap_or_else(|| "made without a disk limit".into()),
            )),
            DiskKind::Project => project::resize(&rec.data_dir, rec.uid, bytes),
            DiskKind::Image => {
                image::resize(&rec.home(), &rec.data_dir, rec.disk_bytes, bytes, stopped).await
            }
        }
    }

    /// Removes what [`Disks::attach`] made for `rec` when the move onto
    /// a limit failed before it took effect: an image is unmounted and
    /// deleted (the data is still where it was), a project's limit lifted.
    pub(crate) async fn undo_attach(&self, rec: &AppspaceRecord) {
        match rec.disk_kind {
            DiskKind::None => {}
            DiskKind::Project => {
                let _ = project::resize(&rec.data_dir, rec.uid, 0);
            }
            DiskKind::Image => {
                let home = rec.home();
                let _ = image::detach(&home).await;
                let (file, mount_point) = image::paths(&home);
                let _ = std::fs::remove_dir(&mount_point);
                let _ = std::fs::remove_file(&file);
            }
        }
    }

    /// Undoes [`Disks::attach`] before the appspace's files go: unmounts
    /// its image, or lifts its project's limit.
    pub async fn release(&self, rec: &AppspaceRecord) -> Result<(), DiskError> {
        match rec.disk_kind {
            DiskKind::None => Ok(()),
            DiskKind::Project => project::resize(&rec.data_dir, rec.uid, 0),
            DiskKind::Image => image::detach(&rec.home()).await,
        }
    }

    /// Unmounts the appspace's image, if it has one (the host stopping).
    pub async fn detach(&self, rec: &AppspaceRecord) -> Result<(), DiskError> {
        match rec.disk_kind {
            DiskKind::Image => image::detach(&rec.home()).await,
            _ => Ok(()),
        }
    }
}

/// Bytes the appspace's data uses, when its way can tell cheaply (the
/// quota's count; the image's file system).
pub fn usage(rec: &AppspaceRecord) -> Option<u64> {
    match rec.disk_kind {
        DiskKind::None => None,
        DiskKind::Project => project::usage(&rec.data_dir, rec.uid).ok(),
        DiskKind::Image => image::usage(&rec.home()).ok(),
    }
}

/// How the appspace's limit is enforced, for people.
pub fn enforced_by(kind: DiskKind) -> &'static str {
    match kind {
        DiskKind::None => "none",
        DiskKind::Project => "project quota",
        DiskKind::Image => "disk image",
    }
}

/// Runs `program` with `args` and a clean environment; its failure is an
/// error that says what it printed.
pub(crate) async fn run(
    program: &'static str,
    args: &[&std::ffi::OsStr],
    on: &Path,
) -> Result<String, DiskError> {
    run_allowing(program, args, on, &[0]).await
}

/// [`run`], with the exit codes that mean success for `program`.
pub(crate) async fn run_allowing(
    program: &'static str,
    args: &[&std::ffi::OsStr],
    on: &Path,
    success: &[i32],
) -> Result<String, DiskError> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| DiskError::Tool {
            program,
            path: on.to_owned(),
            detail: format!("could not run it: {e}"),
        })?;
    if out.status.code().is_some_and(|c| success.contains(&c)) {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    // One line: what it said, without the version banners e2fsprogs
    // print first.
    let said = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(&format!("{program} 1.")))
        .collect::<Vec<_>>()
        .join("; ");
    Err(DiskError::Tool {
        program,
        path: on.to_owned(),
        detail: format!(
            "{}{}",
            out.status,
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ),
    })
}

/// Bytes the files under `dir` take on disk (allocated blocks, links not
/// followed, each inode once): what a disk limit would count.
pub(crate) fn tree_bytes(dir: &Path) -> Result<u64, DiskError> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io("reading", &d))? {
            let entry = entry.map_err(io("reading", &d))?;
            let meta = entry.metadata().map_err(io("measuring", &entry.path()))?;
            if meta.is_dir() {
                stack.push(entry.path());
            }
            if seen.insert((meta.dev(), meta.ino())) {
                total += meta.blocks() * 512;
            }
        }
    }
    Ok(total)
}
