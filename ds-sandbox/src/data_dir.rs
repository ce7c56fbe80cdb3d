//! The appspace's data directory, made the appspace's own before it is
//! mounted at `/data`. One entry point: [`prepare`].
//!
//! The tree belongs to the app, which may have filled it with symbolic
//! links, FIFOs, device-looking names and paths deeper than `PATH_MAX`, so
//! root walks it without ever resolving a path through it: every step is
//! relative to an open directory descriptor, opened with `O_NOFOLLOW`
//! (a link is never entered), `O_DIRECTORY` and `O_NONBLOCK` (a FIFO is
//! never waited on), ownership is changed with `AT_SYMLINK_NOFOLLOW` on
//! the entry itself, and the walk climbs back through `..` only after
//! checking that it lands on the directory it came from (device and inode),
//! so at most two descriptors are open at any depth.
//!
//! Cost: the walk runs only when the directory itself is not already the
//! appspace's. Everything the app creates inside is its own (the sandbox
//! maps nothing else), so a directory that is the appspace's holds nothing
//! that is not, unless root put it there; the host's own writers (restore,
//! import) hand what they write over themselves, or reset the top
//! directory's owner so that the next start walks. Starting an appspace
//! with 100,000 files therefore costs what starting an empty one does.

use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why the data directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A step failed on a path (shown relative to the data directory).
    #[error("data directory {root}: {what} {path}: {source}")]
    Io {
        /// The data directory.
        root: PathBuf,
        /// What we were doing.
        what: &'static str,
        /// Where, inside it.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The tree changed under the walk (a directory moved).
    #[error("data directory {0}: the tree changed while its ownership was being set; start again")]
    Moved(PathBuf),
    /// Not root, and not the caller's own.
    #[error("data directory {0}: not owned by the calling user (run as root to hand it to the appspace)")]
    NotOwned(PathBuf),
}

/// The error for `what` failing on `path` (inside `root`).
fn io_err<'a>(
    root: &'a Path,
    what: &'static str,
    path: &str,
) -> impl FnOnce(Errno) -> DataDirError + 'a {
    let path = path.to_owned();
    move |e: Errno| DataDirError::Io {
        root: root.to_owned(),
        what,
        path,
        source: e.into(),
    }
}

/// What the walk did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Handover {
    /// Entries looked at.
    pub seen: u64,
    /// Entries whose owner was changed.
    pub changed: u64,
}

/// Makes `dir` (created if missing) and everything in it owned by
/// `uid`:`gid`. As root only what is not already theirs is changed, and
/// nothing is walked when `dir` itself is theirs; without root, `dir` must
/// already be the caller's.
pub fn prepare(dir: &Path, uid: u32, gid: u32, as_root: bool) -> Result<Handover, DataDirError> {
    let io = |what, path: &str| io_err(dir, what, path);
    std::fs::create_dir_all(dir).map_err(|source| DataDirError::Io {
        root: dir.to_owned(),
        what: "creating",
        path: ".".into(),
        source,
    })?;
    let top = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("opening", "."))?;
    let st = rustix::fs::fstat(&top).map_err(io("reading", "."))?;
    if st.st_uid == uid && st.st_gid == gid {
        return Ok(Handover {
            seen: 1,
            changed: 0,
        });
    }
    if !as_root {
        return Err(DataDirError::NotOwned(dir.to_owned()));
    }
    let mut done = Handover::default();
    walk(dir, top, "changing the owner of", &mut |parent, name| {
        hand_over(parent, name, (uid, gid), &mut done)
    })?;
    Ok(done)
}

/// Puts `dir` and everything in it into disk-quota project `id` (the
/// directories with `PROJINHERIT`, so that what is created later is
/// counted too), the same way [`prepare`] walks: nothing is followed or
/// waited on. Only directories and regular files carry a project id (the
/// space of links and special files is a few bytes, counted to no
/// project). Walks only when `dir` itself is not in the project yet.
pub fn assign_project(dir: &Path, id: u32) -> Result<Handover, DataDirError> {
    let io = |what, path: &str| io_err(dir, what, path);
    let top = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("opening", "."))?;
    let current = crate::sys::project_id(std::os::fd::AsFd::as_fd(&top)).map_err(|e| {
        io("reading the project of", ".")(Errno::from_io_error(&e).unwrap_or(Errno::IO))
    })?;
    if current == id {
        return Ok(Handover {
            seen: 1,
            changed: 0,
        });
    }
    let mut done = Handover::default();
    walk(dir, top, "setting the project of", &mut |parent, name| {
        into_project(parent, name, id, &mut done)
    })?;
    Ok(done)
}

/// Puts `name` in `parent` into project `id` unless it is there already
/// or carries no project id (links, FIFOs, sockets).
fn into_project(
    parent: &OwnedFd,
    name: &CStr,
    id: u32,
    done: &mut Handover,
) -> Result<rustix::fs::Stat, Errno> {
    let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    done.seen += 1;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::Directory && kind != FileType::RegularFile {
        return Ok(st);
    }
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let seen = rustix::fs::fstat(&fd)?;
    if (seen.st_dev, seen.st_ino) != (st.st_dev, st.st_ino) {
        // Replaced since the stat: take the one that is there now.
        return Err(Errno::AGAIN);
    }
    let fd = std::os::fd::AsFd::as_fd(&fd);
    let now =
        crate::sys::project_id(fd).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
    if now != id {
        crate::sys::set_project_id(fd, id, kind == FileType::Directory)
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
        done.changed += 1;
    }
    Ok(st)
}

/// One directory on the way down: its identity, and the names in it
/// still to visit.
struct Level {
    dev: u64,
    ino: u64,
    pending: Vec<CString>,
    /// The path from the top, for messages only.
    path: String,
}

fn entries(fd: &OwnedFd) -> Result<Vec<CString>, Errno> {
    let mut names = Vec::new();
    for entry in Dir::read_from(fd)? {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn join(path: &str, name: &CStr) -> String {
    let name = name.to_string_lossy();
    if path == "." {
        name.into_owned()
    } else {
        format!("{path}/{name}")
    }
}

/// Changes `name` in `parent` (`.` for `parent` itself) unless it is
/// already `owner`; returns what it was.
fn hand_over(
    parent: &OwnedFd,
    name: &CStr,
    owner: (u32, u32),
    done: &mut Handover,
) -> Result<rustix::fs::Stat, Errno> {
    let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    done.seen += 1;
    if (st.st_uid, st.st_gid) != owner {
        rustix::fs::chownat(
            parent,
            name,
            Some(rustix::process::Uid::from_raw(owner.0)),
            Some(rustix::process::Gid::from_raw(owner.1)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        done.changed += 1;
    }
    Ok(st)
}

/// Visits `top` (as `.`) and everything under it, depth first, calling
/// `visit` on each entry with its parent's descriptor; `visit` returns
/// the entry's stat from before it changed it, and the walk enters what
/// that says is a directory.
fn walk(
    root: &Path,
    top: OwnedFd,
    what: &'static str,
    visit: &mut dyn FnMut(&OwnedFd, &CStr) -> Result<rustix::fs::Stat, Errno>,
) -> Result<(), DataDirError> {
    let io = |what, path: &str| io_err(root, what, path);
    visit(&top, c".").map_err(io(what, "."))?;
    let st = rustix::fs::fstat(&top).map_err(io("reading", "."))?;
    let mut stack = vec![Level {
        dev: st.st_dev,
        ino: st.st_ino,
        pending: entries(&top).map_err(io("listing", "."))?,
        path: ".".into(),
    }];
    let mut cur = top;
    while let Some(level) = stack.last_mut() {
        let Some(name) = level.pending.pop() else {
            // This directory is done: climb back to its parent, checking
            // that `..` is the directory we came down from.
            stack.pop();
            let Some(parent) = stack.last() else {
                break;
            };
            let up = rustix::fs::openat(
                &cur,
                c"..",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io("climbing out of", &parent.path))?;
            let st = rustix::fs::fstat(&up).map_err(io("reading", &parent.path))?;
            if (st.st_dev, st.st_ino) != (parent.dev, parent.ino) {
                return Err(DataDirError::Moved(root.to_owned()));
            }
            cur = up;
            continue;
        };
        let path = join(&level.path, &name);
        let st = match visit(&cur, &name) {
            Ok(st) => st,
            // Removed since it was listed (nothing runs in it now, but be
            // exact about what we know).
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(io(what, &path)(e)),
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            continue;
        }
        let down = rustix::fs::openat(
            &cur,
            &name,
            OFlags::RDONLY
                | OFlags::DIRECTORY
                | OFlags::NOFOLLOW
                | OFlags::NONBLOCK
                | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("opening", &path))?;
        let seen = rustix::fs::fstat(&down).map_err(io("reading", &path))?;
        if (seen.st_dev, seen.st_ino) != (st.st_dev, st.st_ino) {
            return Err(DataDirError::Moved(root.to_owned()));
        }
        let pending = entries(&down).map_err(io("listing", &path))?;
        stack.push(Level {
            dev: seen.st_dev,
            ino: seen.st_ino,
            pending,
            path,
        });
        cur = down;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn an_own_directory_is_not_walked_and_a_foreign_one_needs_root() {
        let tmp = std::env::temp_dir().join(format!("ds-data-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("a/b")).unwrap();
        let meta = std::fs::metadata(&tmp).unwrap();
        let (uid, gid) = (meta.uid(), meta.gid());
        let done = prepare(&tmp, uid, gid, false).unwrap();
        assert_eq!(
            done,
            Handover {
                seen: 1,
                changed: 0
            }
        );
        assert!(matches!(
            prepare(&tmp, uid + 1, gid, false),
            Err(DataDirError::NotOwned(_))
        ));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
