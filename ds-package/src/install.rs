//! Installing a package into the app store: `<root>/<name>/<version>/`,
//! read-only. Everything is unpacked into a staging directory first and
//! validated entry by entry; only a complete, valid version is renamed
//! into place, so a refused package leaves nothing behind.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::manifest::{self, Manifest, ManifestError, MANIFEST_FILE};

/// Caps that keep a package from exhausting the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageLimits {
    /// Total bytes of all files once unpacked.
    pub max_total_bytes: u64,
    /// Number of entries (files, directories, links).
    pub max_entries: u64,
    /// Longest path inside the package.
    pub max_path_bytes: usize,
    /// Largest manifest.
    pub max_manifest_bytes: u64,
}

impl Default for PackageLimits {
    fn default() -> Self {
        Self {
            max_total_bytes: 512 << 20,
            max_entries: 50_000,
            max_path_bytes: 1024,
            max_manifest_bytes: 64 << 10,
        }
    }
}

/// Why a package was refused; nothing was installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The source is neither a directory nor a `.tar.gz`.
    #[error("{0}: not a directory or a .tar.gz package")]
    UnknownSource(PathBuf),
    /// An entry's path is absolute, climbs out with `..`, or is too long.
    #[error("package entry {0:?}: path escapes the package or is malformed")]
    UnsafePath(String),
    /// A symbolic link points outside the package (or is absolute).
    #[error("package entry {path:?}: symlink to {target:?} leads outside the package")]
    LinkOutside {
        /// The link.
        path: String,
        /// Where it points.
        target: String,
    },
    /// A symbolic link that, resolved as the kernel resolves it, leaves
    /// the package or loops.
    #[error("package entry {path:?}: symlink to {target:?} {why} when resolved")]
    LinkUnresolvable {
        /// The link.
        path: String,
        /// Its target.
        target: String,
        /// What resolving it does.
        why: &'static str,
    },
    /// Device files, FIFOs, sockets, hard links and other special entries.
    #[error("package entry {path:?}: {kind} are not allowed in packages")]
    SpecialFile {
        /// The entry.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// A size or count cap was exceeded.
    #[error("package exceeds the limit on {what} ({limit})")]
    TooLarge {
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: u64,
    },
    /// No `ds-app.toml` at the root.
    #[error("package has no {MANIFEST_FILE} at its root")]
    MissingManifest,
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A program the manifest names (the entrypoint, the migrate
    /// command) is missing or unusable.
    #[error("{path} (named in ds-app.toml): {why}")]
    Entrypoint {
        /// The program.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// That version of that app is installed already.
    #[error("{name} {version} is already installed")]
    DuplicateVersion {
        /// The app.
        name: String,
        /// The version.
        version: semver::Version,
    },
    /// The archive is corrupt or an I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS or decoder error.
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> InstallError {
    let what = what.into();
    move |source| InstallError::Io { what, source }
}

/// A successfully installed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledVersion {
    /// Its validated manifest.
    pub manifest: Manifest,
    /// Where its files are (read-only).
    pub dir: PathBuf,
}

/// A validated package waiting in a staging directory.
#[derive(Debug)]
pub struct Staged {
    staging: PathBuf,
    manifest: Option<Manifest>,
    manifest_text: String,
    target: PathBuf,
    /// Put in place of an installed copy of the same version (dev mode).
    replacing: bool,
}

impl Staged {
    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        self.manifest
            .as_ref()
            .expect("a Staged is only handed out validated")
    }

    /// The manifest as written by the author.
    pub fn manifest_text(&self) -> &str {
        &self.manifest_text
    }

    /// The validated files, as they would be installed.
    pub fn files(&self) -> &Path {
        &self.staging
    }

    /// Makes the files read-only and renames them into place (atomic: the
    /// version appears complete or not at all).
    pub fn commit(mut self) -> Result<InstalledVersion, InstallError> {
        let manifest = self
            .manifest
            .take()
            .expect("a Staged is only handed out validated");
        if let Some(app_dir) = self.target.parent() {
            fs::create_dir_all(app_dir)
                .map_err(io_err(format!("creating {}", app_dir.display())))?;
        }
        make_read_only(&self.staging).map_err(io_err("making the package read-only"))?;
        if self.replacing && self.target.exists() {
            // One atomic exchange: the new files are in place and the old
            // ones in the staging path, which the drop removes.
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &self.staging,
                rustix::fs::CWD,
                &self.target,
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .map_err(|e| {
                io_err(format!(
                    "exchanging the package with {}",
                    self.target.display()
                ))(e.into())
            })?;
            return Ok(InstalledVersion {
                manifest,
                dir: self.target.clone(),
            });
        }
        fs::rename(&self.staging, &self.target).map_err(io_err(format!(
            "moving the package to {}",
            self.target.display()
        )))?;
        Ok(InstalledVersion {
            manifest,
            dir: self.target.clone(),
        })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a commit the staging path no longer exists.
        let _ = remove_tree(&self.staging);
    }
}

/// The directory holding every installed app version.
#[derive(Debug)]
pub struct AppStore {
    root: PathBuf,
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

impl AppStore {
    /// Opens (creating if needed) the store at `root`, removing staging
    /// directories a crashed install left behind.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, InstallError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_err(format!("creating {}", root.display())))?;
        for entry in fs::read_dir(&root)
            .map_err(io_err(format!("reading {}", root.display())))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with(".staging-") {
                let _ = remove_tree(&entry.path());
            }
        }
        Ok(Self { root })
    }

    /// Where `name` `version` lives (whether or not it is installed).
    pub fn version_dir(&self, name: &str, version: &semver::Version) -> PathBuf {
        self.root.join(name).join(version.to_string())
    }

    /// Validates and installs the package at `source` (a directory or a
    /// `.tar.gz`). On any error nothing is left in the store.
    pub fn install(
        &self,
        source: &Path,
        limits: &PackageLimits,
    ) -> Result<InstalledVersion, InstallError> {
        self.stage(source, limits)?.commit()
    }

    /// Unpacks and validates the package at `source` into a staging
    /// directory, ready to [`Staged::commit`]. Dropping the result without
    /// committing removes the staging directory.
    pub fn stage(&self, source: &Path, limits: &PackageLimits) -> Result<Staged, InstallError> {
        self.stage_as(source, limits, false)
    }

    /// [`AppStore::stage`] for a package that may replace the installed
    /// files of the same version when committed (dev mode's reinstall of
    /// an app under development; never for a production host).
    pub fn stage_over(
        &self,
        source: &Path,
        limits: &PackageLimits,
    ) -> Result<Staged, InstallError> {
        self.stage_as(source, limits, true)
    }

    fn stage_as(
        &self,
        source: &Path,
        limits: &PackageLimits,
        replacing: bool,
    ) -> Result<Staged, InstallError> {
        let staging = self.root.join(format!(
            ".staging-{}-{}",
            std::process::id(),
            STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&staging).map_err(io_err(format!("creating {}", staging.display())))?;
        let mut staged = Staged {
            staging,
            manifest: None,
            manifest_text: String::new(),
            target: PathBuf::new(),
            replacing,
        };
        let meta = fs::metadata(source).map_err(io_err(format!("reading {}", source.display())))?;
        let mut budget = Budget::new(limits);
        if meta.is_dir() {
            copy_tree(source, &staged.staging, Path::new(""), &mut budget)?;
        } else if is_tar_gz(source) {
            let file =
                fs::File::open(source).map_err(io_err(format!("opening {}", source.display())))?;
            unpack(
                flate2::read::GzDecoder::new(file),
                &staged.staging,
                &mut budget,
            )?;
        } else {
            return Err(InstallError::UnknownSource(source.to_owned()));
        }
        check_links_resolve_inside(&staged.staging)?;
        let (manifest, text) = read_manifest(&staged.staging, limits)?;
        check_entrypoint(&staged.staging, &manifest)?;
        staged.target = self.version_dir(&manifest.name, &manifest.version);
        if staged.target.exists() && !replacing {
            return Err(InstallError::DuplicateVersion {
                name: manifest.name,
                version: manifest.version,
            });
        }
        staged.manifest = Some(manifest);
        staged.manifest_text = text;
        Ok(staged)
    }

    /// Every installed version: (app, version, directory).
    pub fn installed(&self) -> Vec<(String, semver::Version, PathBuf)> {
        let mut out = Vec::new();
        let Ok(apps) = fs::read_dir(&self.root) else {
            return out;
        };
        for app in apps.flatten() {
            let name = app.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(versions) = fs::read_dir(app.path()) else {
                continue;
            };
            for v in versions.flatten() {
                if let Ok(version) = semver::Version::parse(&v.file_name().to_string_lossy()) {
                    out.push((name.clone(), version, v.path()));
                }
            }
        }
        out
    }

    /// Removes an installed version (its files are read-only, so they are
    /// made writable first).
    pub fn remove(&self, name: &str, version: &semver::Version) -> Result<(), InstallError> {
        let dir = self.version_dir(name, version);
        remove_tree(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
        // The app's directory goes when its last version does.
        let _ = fs::remove_dir(self.root.join(name));
        Ok(())
    }
}

fn is_tar_gz(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Counts what a package unpacks to.
struct Budget<'a> {
    limits: &'a PackageLimits,
    bytes: u64,
    entries: u64,
}

impl<'a> Budget<'a> {
    fn new(limits: &'a PackageLimits) -> Self {
        Self {
            limits,
            bytes: 0,
            entries: 0,
        }
    }

    fn entry(&mut self) -> Result<(), InstallError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(InstallError::TooLarge {
                what: "entries",
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    fn bytes_left(&self) -> u64 {
        self.limits.max_total_bytes - self.bytes
    }

    fn add_bytes(&mut self, n: u64) -> Result<(), InstallError> {
        self.bytes += n;
        if self.bytes > self.limits.max_total_bytes {
            return Err(InstallError::TooLarge {
                what: "total size in bytes",
                limit: self.limits.max_total_bytes,
            });
        }
        Ok(())
    }
}

/// A package-relative path made only of normal components.
fn safe_relative(raw: &Path, limits: &PackageLimits) -> Result<PathBuf, InstallError> {
    let shown = || raw.to_string_lossy().into_owned();
    if raw.as_os_str().len() > limits.max_path_bytes {
        return Err(InstallError::UnsafePath(shown()));
    }
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return Err(InstallError::UnsafePath(shown())),
        }
    }
    Ok(out)
}

/// Refuses symlinks that are absolute or climb above the package root
/// (judged lexically from the link's own directory).
fn check_link(rel: &Path, target: &Path) -> Result<(), InstallError> {
    let outside = || InstallError::LinkOutside {
        path: rel.to_string_lossy().into_owned(),
        target: target.to_string_lossy().into_owned(),
    };
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(outside());
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(outside()),
        }
    }
    Ok(())
}

/// Resolves every link in the staged tree as the kernel will, confined
/// beneath the tree's root (`openat2` with `RESOLVE_BENEATH`): each entry
/// was checked lexically already, but links combine (`s -> .` with
/// `t -> s/s/../..` passes a lexical check and leaves the tree). A link
/// that leaves the tree (`EXDEV`) or loops (`ELOOP`) is refused; one
/// that points at nothing inside it is harmless (the version is
/// read-only, so nothing can appear there) and kept.
fn check_links_resolve_inside(staging: &Path) -> Result<(), InstallError> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        staging,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| InstallError::Io {
        what: format!("opening {}", staging.display()),
        source: e.into(),
    })?;
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let here = staging.join(&rel);
        let entries = fs::read_dir(&here).map_err(io_err(format!("listing {}", here.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_err(format!("listing {}", here.display())))?;
            let path = rel.join(entry.file_name());
            let ft = entry
                .file_type()
                .map_err(io_err(format!("reading {}", path.display())))?;
            if ft.is_dir() {
                dirs.push(path);
                continue;
            }
            if !ft.is_symlink() {
                continue;
            }
            let resolved = rustix::fs::openat2(
                &root,
                &path,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            );
            match resolved {
                Ok(_) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => {
                    let target = fs::read_link(staging.join(&path)).unwrap_or_default();
                    let why = match e {
                        rustix::io::Errno::LOOP => "loops",
                        _ => "leads outside the package",
                    };
                    return Err(InstallError::LinkUnresolvable {
                        path: path.to_string_lossy().into_owned(),
                        target: target.to_string_lossy().into_owned(),
                        why,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Refuses an entry below a symlink (`link/file`): lexical link checks
/// assume every directory on the way is real, and writing through a link
/// could land anywhere it points.
fn ensure_real_ancestors(staging: &Path, rel: &Path) -> Result<(), InstallError> {
    let mut at = staging.to_owned();
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            break; // the entry itself
        }
        at.push(part);
        if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(InstallError::UnsafePath(rel.to_string_lossy().into_owned()));
        }
    }
    Ok(())
}

fn write_file(
    dst: &Path,
    mut src: impl Read,
    executable: bool,
    budget: &mut Budget,
) -> Result<(), InstallError> {
    let mut out = fs::File::create(dst).map_err(io_err(format!("creating {}", dst.display())))?;
    // Read one byte past the budget to notice an overflow without
    // trusting any size the source claims.
    let copied = io::copy(&mut (&mut src).take(budget.bytes_left() + 1), &mut out)
        .map_err(io_err(format!("writing {}", dst.display())))?;
    budget.add_bytes(copied)?;
    let mode = if executable { 0o755 } else { 0o644 };
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", dst.display())))
}

fn unpack(reader: impl Read, staging: &Path, budget: &mut Budget) -> Result<(), InstallError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(io_err("reading the archive"))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("reading the archive"))?;
        budget.entry()?;
        let raw = entry
            .path()
            .map_err(io_err("reading an entry's path"))?
            .into_owned();
        let rel = safe_relative(&raw, budget.limits)?;
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        let dst = staging.join(&rel);
        let shown = rel.to_string_lossy().into_owned();
        ensure_real_ancestors(staging, &rel)?;
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
        }
        use tar::EntryType as T;
        match entry.header().entry_type() {
            T::Regular | T::Continuous => {
                let executable = entry
                    .header()
                    .mode()
                    .map(|m| m & 0o111 != 0)
                    .unwrap_or(false);
                write_file(&dst, &mut entry, executable, budget)?;
            }
            T::Directory => {
                fs::create_dir_all(&dst).map_err(io_err(format!("creating {}", dst.display())))?
            }
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(io_err("reading a link target"))?
                    .ok_or_else(|| InstallError::UnsafePath(shown.clone()))?
                    .into_owned();
                check_link(&rel, &target)?;
                symlink(&target, &dst).map_err(io_err(format!("creating {}", dst.display())))?;
            }
            T::Link => {
                return Err(InstallError::SpecialFile {
                    path: shown,
                    kind: "hard links",
                })
            }
            T::Char | T::Block => {
                return Err(InstallError::SpecialFile {
                    path: shown,
                    kind: "device files",
                })
            }
            T::Fifo => {
                return Err(InstallError::SpecialFile {
                    path: shown,
                    kind: "FIFOs",
                })
            }
            _ => {
                return Err(InstallError::SpecialFile {
                    path: shown,
                    kind: "special tar entries",
                })
            }
        }
    }
    Ok(())
}

fn copy_tree(
    src_root: &Path,
    dst_root: &Path,
    rel: &Path,
    budget: &mut Budget,
) -> Result<(), InstallError> {
    let dir = src_root.join(rel);
    let entries = fs::read_dir(&dir).map_err(io_err(format!("reading {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("reading {}", dir.display())))?;
        budget.entry()?;
        let rel = safe_relative(&rel.join(entry.file_name()), budget.limits)?;
        let (src, dst) = (src_root.join(&rel), dst_root.join(&rel));
        let shown = rel.to_string_lossy().into_owned();
        let ft = entry
            .file_type()
            .map_err(io_err(format!("reading {}", src.display())))?;
        if ft.is_dir() {
            fs::create_dir(&dst).map_err(io_err(format!("creating {}", dst.display())))?;
            copy_tree(src_root, dst_root, &rel, budget)?;
        } else if ft.is_file() {
            let meta = entry
                .metadata()
                .map_err(io_err(format!("reading {}", src.display())))?;
            let file =
                fs::File::open(&src).map_err(io_err(format!("opening {}", src.display())))?;
            write_file(&dst, file, meta.permissions().mode() & 0o111 != 0, budget)?;
        } else if ft.is_symlink() {
            let target =
                fs::read_link(&src).map_err(io_err(format!("reading {}", src.display())))?;
            check_link(&rel, &target)?;
            symlink(&target, &dst).map_err(io_err(format!("creating {}", dst.display())))?;
        } else {
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_char_device() || ft.is_block_device() {
                "device files"
            } else if ft.is_fifo() {
                "FIFOs"
            } else {
                "sockets"
            };
            return Err(InstallError::SpecialFile { path: shown, kind });
        }
    }
    Ok(())
}

fn read_manifest(
    staging: &Path,
    limits: &PackageLimits,
) -> Result<(Manifest, String), InstallError> {
    let path = staging.join(MANIFEST_FILE);
    let meta = fs::symlink_metadata(&path).map_err(|_| InstallError::MissingManifest)?;
    if !meta.is_file() {
        return Err(InstallError::MissingManifest);
    }
    if meta.len() > limits.max_manifest_bytes {
        return Err(InstallError::TooLarge {
            what: "manifest size in bytes",
            limit: limits.max_manifest_bytes,
        });
    }
    let text = fs::read_to_string(&path).map_err(io_err(format!("reading {MANIFEST_FILE}")))?;
    Ok((manifest::parse(&text)?, text))
}

fn check_entrypoint(staging: &Path, manifest: &Manifest) -> Result<(), InstallError> {
    check_program(staging, manifest, &manifest.entrypoint)?;
    if let Some(migrate) = manifest.data.migrate_program() {
        check_program(staging, manifest, &migrate)?;
    }
    Ok(())
}

/// The entrypoint, or the migrate command's program, is a file in the
/// package (executable for a native app).
fn check_program(staging: &Path, manifest: &Manifest, program: &Path) -> Result<(), InstallError> {
    let path = staging.join(program);
    let fail = |why| InstallError::Entrypoint {
        path: program.to_owned(),
        why,
    };
    // Follow links (they were checked to stay inside the package).
    let meta = fs::metadata(&path).map_err(|_| fail("does not exist in the package"))?;
    if !meta.is_file() {
        return Err(fail("is not a regular file"));
    }
    if manifest.runtime == ds_api::Runtime::Native && meta.permissions().mode() & 0o111 == 0 {
        return Err(fail("is not executable (a native entrypoint must be)"));
    }
    Ok(())
}

/// Makes everything below `dir` read-only and readable by every appspace
/// uid (links untouched): directories 0555, files 0444 or 0555. Modes
/// are set, never derived from how the directories were created, so the
/// host's umask (0077 under its systemd unit) cannot make an app
/// unreadable to its own sandbox.
fn make_read_only(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            make_read_only(&entry.path())?;
        } else if !ft.is_symlink() {
            let mode = entry.metadata()?.permissions().mode();
            let mode = if mode & 0o100 != 0 { 0o555 } else { 0o444 };
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode))?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o555))
}

/// Removes a tree even if it was made read-only.
fn remove_tree(dir: &Path) -> io::Result<()> {
    fn writable(dir: &Path) -> io::Result<()> {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                writable(&entry.path())?;
            }
        }
        Ok(())
    }
    match writable(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        _ => {}
    }
    fs::remove_dir_all(dir)
}
