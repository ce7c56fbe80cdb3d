//! One appspace as a file, to move it to another host (docs/backups.md,
//! "Moving an appspace"): a `.tar.gz` that plain `tar` reads, holding
//!
//! 1. `ds-export.json`: what it is ([`Manifest`]): the appspace's name and
//!    domain, its app and version, its limits, the egress it was allowed
//!    (told to the importing admin, never granted by the import), the
//!    backup the data was read from;
//! 2. `package.tar.gz`: the app version as an installable package;
//! 3. `data/...`: the data directory as that backup holds it (regular
//!    files, directories and symbolic links, with their modes and times).
//!
//! Writing reads the data from a fresh backup (`restic dump`), never from
//! the live tree. Reading is strict, as a package install is: the entries
//! in that order, nothing but those three kinds, paths of plain
//! components only, no entry twice, none below a link or a file, sizes
//! within the limit the importing host gives; [`check`] reads it all
//! before anything is created, and [`unpack_data`] writes into a fresh
//! directory with `O_EXCL | O_NOFOLLOW`, never through a link.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `format` in every export.
pub const FORMAT: &str = "ds-appspace-export";
/// The version of the format written; readers refuse newer ones.
pub const FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "ds-export.json";
const PACKAGE: &str = "package.tar.gz";
const DATA: &str = "data";
/// The manifest is small.
const MAX_MANIFEST_BYTES: u64 = 64 << 10;
/// Entries at most in an export's data.
pub const MAX_DATA_ENTRIES: u64 = 10_000_000;
const MAX_PATH_BYTES: usize = 4096;
const MAX_NAME_BYTES: usize = 255;

/// What an export says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// When it was written (Unix time).
    pub exported_at: i64,
    /// The ds version that wrote it.
    pub host_version: String,
    /// The appspace's name on the host it came from.
    pub name: String,
    /// Its domain there.
    pub domain: String,
    /// Its app.
    pub app: String,
    /// The app's version.
    pub version: String,
    /// Its memory limit, bytes.
    pub memory_bytes: u64,
    /// Its CPU share, cores.
    pub cpus: f64,
    /// Its task limit.
    pub pids: u64,
    /// Its disk limit, bytes (0: none).
    pub disk_bytes: u64,
    /// The egress it was allowed there (not granted by an import).
    pub egress: Vec<String>,
    /// The backup its data was read from.
    pub backup: String,
}

/// Why an export could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading or writing a file failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a valid export.
    #[error("not a valid appspace export: {0}")]
    Invalid(String),
    /// The data is larger than the importing appspace may hold.
    #[error("the export's data ({bytes} bytes) does not fit the disk limit of {limit} bytes")]
    TooLarge {
        /// The data's size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
}

fn io_at(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ExportError {
    let path = path.to_owned();
    move |source| ExportError::Io { what, path, source }
}

fn invalid(why: impl Into<String>) -> ExportError {
    ExportError::Invalid(why.into())
}

/// What was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Data entries written.
    pub entries: u64,
    /// Bytes of file contents.
    pub bytes: u64,
    /// Entries of other kinds (FIFOs, sockets, devices) left out.
    pub skipped: u64,
}

/// Writes an export to `out` (created, mode 0600): `manifest`, the
/// package `package` (a `.tar.gz` file), and the data from `dump`, a tar
/// stream whose entries are named `prefix/...` (`restic dump`'s).
pub fn write(
    out: &Path,
    manifest: &Manifest,
    package: &Path,
    dump: impl Read,
    prefix: &str,
) -> Result<Written, ExportError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(io_at("creating", out))?;
    let gz = flate2::write::GzEncoder::new(io::BufWriter::new(file), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let fail = io_at("writing", out);
    let written = (|| -> io::Result<Written> {
        let json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
        let mut header = file_header(json.len() as u64, 0o644);
        tar.append_data(&mut header, MANIFEST, &json[..])?;
        let mut pkg = fs::File::open(package)?;
        let mut header = file_header(pkg.metadata()?.len(), 0o644);
        tar.append_data(&mut header, PACKAGE, &mut pkg)?;
        let mut header = dir_header(0o700, 0);
        tar.append_data(&mut header, DATA, io::empty())?;
        let written = copy_data(&mut tar, dump, prefix)?;
        let gz = tar.into_inner()?;
        let mut buffered = gz.finish()?;
        buffered.flush()?;
        buffered.get_ref().sync_all()?;
        Ok(written)
    })()
    .map_err(fail);
    if written.is_err() {
        let _ = fs::remove_file(out);
    }
    written
}

fn file_header(size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(crate::state::now().max(0) as u64);
    h
}

fn dir_header(mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h
}

/// Copies the entries of `dump` below `prefix` into `tar` below `data/`:
/// files, directories and links with their modes (set-id bits dropped)
/// and times; owners are not kept (the importing host gives the data to
/// its appspace's own uid).
fn copy_data<W: Write>(
    tar: &mut tar::Builder<W>,
    dump: impl Read,
    prefix: &str,
) -> io::Result<Written> {
    let mut written = Written::default();
    let mut archive = tar::Archive::new(dump);
    let prefix = Path::new(prefix.trim_start_matches('/'));
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let Ok(rel) = path.strip_prefix(prefix) else {
            continue; // restic names nothing else; nothing else is ours
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let name = Path::new(DATA).join(rel);
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let mtime = entry.header().mtime().unwrap_or(0);
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut h = file_header(entry.size(), mode);
                h.set_mtime(mtime);
                tar.append_data(&mut h, &name, &mut entry)?;
                written.bytes += entry.size();
            }
            tar::EntryType::Directory => {
                let mut h = dir_header(mode, mtime);
                tar.append_data(&mut h, &name, io::empty())?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| {
                        io::Error::other(format!("{}: a link without a target", rel.display()))
                    })?
                    .into_owned();
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                h.set_mtime(mtime);
                tar.append_link(&mut h, &name, &target)?;
            }
            _ => {
                written.skipped += 1;
                continue;
            }
        }
        written.entries += 1;
    }
    Ok(written)
}

/// What [`check`] found.
#[derive(Debug)]
pub struct Checked {
    /// The export's manifest.
    pub manifest: Manifest,
    /// Data entries.
    pub entries: u64,
    /// Bytes of file contents in the data.
    pub bytes: u64,
}

/// Reads the export `file` through, checking everything (see the
/// module's documentation), and copies its package to `package_to`
/// (created, at most `max_package_bytes`). `data_limit` caps the data's
/// file contents (0: no cap). Changes nothing else.
pub fn check(
    file: &Path,
    package_to: &Path,
    max_package_bytes: u64,
    data_limit: u64,
) -> Result<Checked, ExportError> {
    let reader = open(file)?;
    let mut archive = tar::Archive::new(reader);
    let read_err = |e: io::Error| invalid(format!("reading it: {e}"));
    let mut entries = archive.entries().map_err(read_err)?;
    // 1. The manifest.
    let mut first = entries
        .next()
        .ok_or_else(|| invalid("it is empty"))?
        .map_err(read_err)?;
    if first.path().map_err(read_err)?.as_ref() != Path::new(MANIFEST)
        || first.header().entry_type() != tar::EntryType::Regular
    {
        return Err(invalid(format!("its first entry is not {MANIFEST}")));
    }
    let mut text = String::new();
    (&mut first)
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| invalid(format!("{MANIFEST}: {e}")))?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(invalid(format!(
            "{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    let manifest = parse_manifest(&text)?;
    // 2. The package.
    let mut second = entries
        .next()
        .ok_or_else(|| invalid(format!("it holds no {PACKAGE}")))?
        .map_err(read_err)?;
    if second.path().map_err(read_err)?.as_ref() != Path::new(PACKAGE)
        || second.header().entry_type() != tar::EntryType::Regular
    {
        return Err(invalid(format!("its second entry is not {PACKAGE}")));
    }
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(package_to)
        .map_err(io_at("creating", package_to))?;
    let copied = io::copy(&mut (&mut second).take(max_package_bytes + 1), &mut out)
        .map_err(|e| invalid(format!("{PACKAGE}: {e}")))?;
    if copied > max_package_bytes {
        return Err(invalid(format!(
            "{PACKAGE} is larger than the {} MiB a package may be",
            max_package_bytes >> 20
        )));
    }
    // 3. The data.
    let mut tree = Tree::default();
    let mut bytes = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(read_err)?;
        let Some(rel) = tree.admit(&entry)? else {
            continue;
        };
        if entry.header().entry_type() == tar::EntryType::Regular {
            // Counted by reading, not by what the header claims.
            let n = io::copy(&mut entry, &mut io::sink())
                .map_err(|e| invalid(format!("data/{}: {e}", rel.display())))?;
            bytes += n;
            if data_limit > 0 && bytes > data_limit {
                return Err(ExportError::TooLarge {
                    bytes,
                    limit: data_limit,
                });
            }
        }
    }
    if !tree.has_root {
        return Err(invalid(format!("it holds no {DATA}/ directory")));
    }
    Ok(Checked {
        manifest,
        entries: tree.seen.len() as u64,
        bytes,
    })
}

/// Parses and checks a manifest.
pub fn parse_manifest(text: &str) -> Result<Manifest, ExportError> {
    let m: Manifest =
        serde_json::from_str(text).map_err(|e| invalid(format!("{MANIFEST}: {e}")))?;
    if m.format != FORMAT {
        return Err(invalid(format!(
            "{MANIFEST}: format {:?}, not {FORMAT:?}",
            m.format
        )));
    }
    if m.format_version == 0 || m.format_version > FORMAT_VERSION {
        return Err(invalid(format!(
            "{MANIFEST}: format version {} (this host reads up to {FORMAT_VERSION}: upgrade ds)",
            m.format_version
        )));
    }
    if m.version.parse::<semver::Version>().is_err() {
        return Err(invalid(format!(
            "{MANIFEST}: version {:?} is not a version",
            m.version
        )));
    }
    Ok(m)
}

fn open(file: &Path) -> Result<impl Read, ExportError> {
    let f = fs::File::open(file).map_err(io_at("opening", file))?;
    Ok(flate2::read::GzDecoder::new(io::BufReader::new(f)))
}

/// The data entries seen so far, for the rules every entry must follow.
#[derive(Debug, Default)]
struct Tree {
    /// Every path seen (relative to `data/`).
    seen: HashSet<PathBuf>,
    /// Paths that are not directories: nothing may be below them.
    leaves: HashSet<PathBuf>,
    has_root: bool,
}

impl Tree {
    /// Checks one entry; returns its path below `data/` (`None` for
    /// `data/` itself).
    fn admit<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
    ) -> Result<Option<PathBuf>, ExportError> {
        let raw = entry
            .path()
            .map_err(|e| invalid(format!("an entry's name: {e}")))?
            .into_owned();
        let shown = raw.display().to_string();
        if raw.as_os_str().len() > MAX_PATH_BYTES {
            return Err(invalid(format!(
                "{shown}: a name longer than {MAX_PATH_BYTES} bytes"
            )));
        }
        let rel = match raw.strip_prefix(DATA) {
            Ok(rel) => rel.to_owned(),
            Err(_) => return Err(invalid(format!("{shown}: an entry outside {DATA}/"))),
        };
        for c in rel.components() {
            match c {
                Component::Normal(n) if n.len() <= MAX_NAME_BYTES => {}
                _ => return Err(invalid(format!("{shown}: not a plain relative name"))),
            }
        }
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() {
            if kind != tar::EntryType::Directory || self.has_root {
                return Err(invalid(format!("{DATA}/ is not one directory")));
            }
            self.has_root = true;
            return Ok(None);
        }
        if !self.has_root {
            return Err(invalid(format!("{shown} comes before {DATA}/")));
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Symlink => {}
            tar::EntryType::Link => {
                return Err(invalid(format!("{shown}: hard links are refused")))
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(invalid(format!("{shown}: device files are refused")))
            }
            tar::EntryType::Fifo => return Err(invalid(format!("{shown}: FIFOs are refused"))),
            _ => return Err(invalid(format!("{shown}: a special tar entry, refused"))),
        }
        if self.seen.len() as u64 >= MAX_DATA_ENTRIES {
            return Err(invalid(format!("more than {MAX_DATA_ENTRIES} entries")));
        }
        for ancestor in rel.ancestors().skip(1) {
            if self.leaves.contains(ancestor) {
                return Err(invalid(format!(
                    "{shown}: below {}, which is not a directory",
                    ancestor.display()
                )));
            }
        }
        if !self.seen.insert(rel.clone()) {
            return Err(invalid(format!("{shown}: there twice")));
        }
        if kind != tar::EntryType::Directory {
            self.leaves.insert(rel.clone());
        }
        Ok(Some(rel))
    }
}

/// Writes the data of the export `file` (checked by [`check`] first)
/// into `into`, a directory made here (mode 0700) or empty: files
/// created new and never through a link, modes without set-id bits, times
/// as exported. Owners are root's; the appspace's next start hands the
/// files to its uid.
pub fn unpack_data(file: &Path, into: &Path) -> Result<u64, ExportError> {
    match fs::DirBuilder::new().mode(0o700).create(into) {
        Ok(()) => {}
        // Or made empty by the caller (given a disk-quota project first).
        Err(e)
            if e.kind() == io::ErrorKind::AlreadyExists
                && is_real_dir(into)
                && fs::read_dir(into).is_ok_and(|mut d| d.next().is_none()) => {}
        Err(e) => return Err(io_at("creating", into)(e)),
    }
    let mut archive = tar::Archive::new(open(file)?);
    let read_err = |e: io::Error| invalid(format!("reading it: {e}"));
    let mut tree = Tree::default();
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    let mut bytes = 0;
    for (i, entry) in archive.entries().map_err(read_err)?.enumerate() {
        let mut entry = entry.map_err(read_err)?;
        if i < 2 {
            continue; // the manifest and the package, checked before
        }
        let Some(rel) = tree.admit(&entry)? else {
            continue;
        };
        let dst = into.join(&rel);
        let header = entry.header();
        let mode = header.mode().map_err(read_err)? & 0o777;
        let mtime = filetime::FileTime::from_unix_time(header.mtime().map_err(read_err)? as i64, 0);
        if let Some(parent) = dst.parent() {
            // Only directories of this tree (no link or file is ever
            // below another entry: Tree::admit), in a directory of ours.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_at("creating", parent))?;
        }
        match header.entry_type() {
            tar::EntryType::Regular => {
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .mode(0o600)
                    .open(&dst)
                    .map_err(io_at("creating", &dst))?;
                bytes += io::copy(&mut entry, &mut out).map_err(io_at("writing", &dst))?;
                out.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_at("setting the mode of", &dst))?;
                filetime::set_file_handle_times(&out, Some(mtime), Some(mtime))
                    .map_err(io_at("setting the times of", &dst))?;
            }
            tar::EntryType::Directory => {
                match fs::DirBuilder::new().mode(0o700).create(&dst) {
                    Ok(()) => {}
                    // Made already as the parent of an earlier entry.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && is_real_dir(&dst) => {}
                    Err(e) => return Err(io_at("creating", &dst)(e)),
                }
                dirs.push((dst, mode, header.mtime().map_err(read_err)?));
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(read_err)?
                    .ok_or_else(|| {
                        invalid(format!("data/{}: a link without a target", rel.display()))
                    })?
                    .into_owned();
                std::os::unix::fs::symlink(&target, &dst).map_err(io_at("creating", &dst))?;
                filetime::set_symlink_file_times(&dst, mtime, mtime)
                    .map_err(io_at("setting the times of", &dst))?;
            }
            _ => unreachable!("Tree::admit lets only these through"),
        }
    }
    // Directories last, deepest first: writing into one changes its time.
    for (dir, mode, mtime) in dirs.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .map_err(io_at("setting the mode of", &dir))?;
        let t = filetime::FileTime::from_unix_time(mtime as i64, 0);
        filetime::set_file_times(&dir, t, t).map_err(io_at("setting the times of", &dir))?;
    }
    Ok(bytes)
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// A package (`.tar.gz`) of the installed version in `dir`, written to
/// `out` (created): what `dsctl app install` takes.
pub fn pack_version(dir: &Path, out: &Path) -> Result<(), ExportError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(io_at("creating", out))?;
    let gz =
        flate2::write::GzEncoder::new(io::BufWriter::new(file), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let packed = (|| -> io::Result<()> {
        tar.append_dir_all(".", dir)?;
        tar.into_inner()?.finish()?.flush()
    })()
    .map_err(io_at("packing", dir));
    if packed.is_err() {
        let _ = fs::remove_file(out);
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            exported_at: 1,
            host_version: "0.1.0".into(),
            name: "notes".into(),
            domain: "notes.localhost".into(),
            app: "notes".into(),
            version: "1.0.0".into(),
            memory_bytes: 64 << 20,
            cpus: 1.0,
            pids: 64,
            disk_bytes: 0,
            egress: vec!["example.com:443".into()],
            backup: "abcd1234".into(),
        }
    }

    /// A tar stream like restic dump's: entries named `srv/d/...`.
    fn dump(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in entries {
            let mut h = tar::Header::new_gnu();
            if let Some(target) = name.strip_prefix("link:") {
                let (name, target) = target.split_once("->").unwrap();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, name, target).unwrap();
                continue;
            }
            if name.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o750);
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o4755); // a set-uid bit, dropped on the way
            }
            h.set_size(body.len() as u64);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, name, *body).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn export_of(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
        let pkg = dir.join("pkg.tar.gz");
        fs::write(&pkg, b"package bytes").unwrap();
        let out = dir.join("x.tar.gz");
        write(&out, &manifest(), &pkg, &dump(entries)[..], "/srv/d").unwrap();
        out
    }

    #[test]
    fn an_export_round_trips_and_reads_with_plain_tar() {
        let dir = tempfile::tempdir().unwrap();
        let out = export_of(
            dir.path(),
            &[
                ("srv/d/a.txt", b"hello"),
                ("srv/d/sub/", b""),
                ("srv/d/sub/b", b"world!"),
                ("link:srv/d/l->/etc/passwd", b""),
            ],
        );
        let listed = std::process::Command::new("tar")
            .arg("tzf")
            .arg(&out)
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        assert!(
            listed.starts_with("ds-export.json\npackage.tar.gz\ndata"),
            "{listed}"
        );
        assert!(
            listed.contains("data/sub/b\n") && listed.contains("data/l\n"),
            "{listed}"
        );
        let checked = check(&out, &dir.path().join("p"), 1 << 20, 0).unwrap();
        assert_eq!(checked.manifest, manifest());
        assert_eq!((checked.entries, checked.bytes), (4, 11));
        assert_eq!(fs::read(dir.path().join("p")).unwrap(), b"package bytes");
        let into = dir.path().join("into");
        assert_eq!(unpack_data(&out, &into).unwrap(), 11);
        assert_eq!(fs::read_to_string(into.join("sub/b")).unwrap(), "world!");
        let meta = fs::metadata(into.join("a.txt")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "set-uid dropped");
        assert_eq!(
            filetime::FileTime::from_last_modification_time(&meta).unix_seconds(),
            1_700_000_000
        );
        let sub = fs::metadata(into.join("sub")).unwrap();
        assert_eq!(sub.permissions().mode() & 0o777, 0o750);
        assert_eq!(
            filetime::FileTime::from_last_modification_time(&sub).unix_seconds(),
            1_700_000_000
        );
        assert_eq!(
            fs::read_link(into.join("l")).unwrap(),
            Path::new("/etc/passwd")
        );
        // Too large for the importing limit: refused before anything.
        assert!(matches!(
            check(&out, &dir.path().join("p2"), 1 << 20, 10),
            Err(ExportError::TooLarge {
                bytes: 11,
                limit: 10
            })
        ));
    }

    /// An export file made by hand, entries as given (after a valid
    /// manifest and package unless `raw`).
    fn forged(dir: &Path, raw: bool, entries: &[(&str, tar::EntryType, &[u8])]) -> PathBuf {
        let out = dir.join(format!("forged-{}.tar.gz", entries.len()));
        let _ = fs::remove_file(&out);
        let gz = flate2::write::GzEncoder::new(
            fs::File::create(&out).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        let json = serde_json::to_vec(&manifest()).unwrap();
        let mut all: Vec<(&str, tar::EntryType, &[u8])> = Vec::new();
        if !raw {
            all.push((MANIFEST, tar::EntryType::Regular, &json));
            all.push((PACKAGE, tar::EntryType::Regular, b"pkg"));
        }
        all.extend_from_slice(entries);
        for (name, kind, body) in all {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            if kind == tar::EntryType::Symlink || kind == tar::EntryType::Link {
                b.append_link(&mut h, name, "target").unwrap();
            } else {
                // Names are set raw so that `..` and `/` reach the reader.
                let bytes = name.as_bytes();
                h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
                h.set_cksum();
                b.append(&h, body).unwrap();
            }
        }
        b.into_inner().unwrap().finish().unwrap();
        out
    }

    #[test]
    fn bad_exports_are_refused_before_anything_is_made() {
        use tar::EntryType as T;
        let dir = tempfile::tempdir().unwrap();
        let d: &[u8] = b"";
        type Entries<'a> = Vec<(&'a str, T, &'a [u8])>;
        let cases: Vec<(bool, Entries, &str)> = vec![
            (true, vec![], "empty"),
            (true, vec![("data/", T::Directory, d)], "first entry"),
            (false, vec![], "no data/"),
            (
                false,
                vec![("data/", T::Directory, d), ("data/../x", T::Regular, b"x")],
                "plain relative",
            ),
            (
                false,
                vec![("data/", T::Directory, d), ("/etc/x", T::Regular, b"x")],
                "outside",
            ),
            (
                false,
                vec![("data/", T::Directory, d), ("other", T::Regular, b"x")],
                "outside",
            ),
            (false, vec![("data/x", T::Regular, b"x")], "before data/"),
            (
                false,
                vec![
                    ("data/", T::Directory, d),
                    ("data/l", T::Symlink, d),
                    ("data/l/x", T::Regular, b"x"),
                ],
                "not a directory",
            ),
            (
                false,
                vec![
                    ("data/", T::Directory, d),
                    ("data/f", T::Regular, b"x"),
                    ("data/f", T::Regular, b"y"),
                ],
                "twice",
            ),
            (
                false,
                vec![("data/", T::Directory, d), ("data/h", T::Link, d)],
                "hard links",
            ),
            (
                false,
                vec![("data/", T::Directory, d), ("data/p", T::Fifo, d)],
                "FIFOs",
            ),
            (
                false,
                vec![("data/", T::Directory, d), ("data/c", T::Char, d)],
                "device",
            ),
        ];
        for (i, (raw, entries, needle)) in cases.into_iter().enumerate() {
            let file = forged(dir.path(), raw, &entries);
            let pkg = dir.path().join(format!("pkg-{i}"));
            let err = check(&file, &pkg, 1 << 20, 0).unwrap_err().to_string();
            assert!(err.contains(needle), "case {i}: {err:?} lacks {needle:?}");
        }
        // A manifest of another format, or from a newer ds.
        for (edit, needle) in [
            (r#""format": "ds-appspace-export""#, "format"),
            (r#""format_version": 1"#, "format version"),
        ] {
            let text = serde_json::to_string_pretty(&manifest()).unwrap();
            let bad = text.replace(
                edit,
                &edit
                    .replace("ds-appspace-export", "tarball")
                    .replace('1', "9"),
            );
            assert!(parse_manifest(&bad)
                .unwrap_err()
                .to_string()
                .contains(needle));
        }
        assert!(parse_manifest(r#"{"format":"ds-appspace-export"}"#).is_err());
        let mut extra = serde_json::to_value(manifest()).unwrap();
        extra["surprise"] = 1.into();
        assert!(parse_manifest(&extra.to_string())
            .unwrap_err()
            .to_string()
            .contains("unknown field"));
    }
}
