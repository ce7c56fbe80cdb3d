//! Project quotas: the appspace's data directory and everything in it
//! belong to project `uid` (its host uid, unique per appspace), new
//! entries inherit it, and the file system refuses writes past the
//! project's hard limit with `EDQUOT`, even to root inside the sandbox
//! (the app's uid holds no `CAP_SYS_RESOURCE` in the host's namespace).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use super::{io, mountinfo, DiskError};

/// Whether the file system holding `dir` keeps and enforces project
/// quotas; if not, why.
pub(crate) fn available(dir: &Path) -> Result<(), String> {
    let fd = open(dir).map_err(|e| e.to_string())?;
    match ds_sandbox::sys::project_usage(fd.as_fd(), 0) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => {
            return Err(format!(
                "the file system holding {} keeps no project quotas",
                dir.display()
            ))
        }
        Err(e) => return Err(format!("project quotas on {}: {e}", dir.display())),
    }
    let mount = mountinfo::holding(dir)?;
    let enforced = mount
        .super_options
        .iter()
        .any(|o| o == "prjquota" || o == "pquota" || o == "prjjquota");
    if !enforced {
        return Err(format!(
            "{} ({} on {}) counts project quotas but does not enforce them (mount it with prjquota)",
            mount.point, mount.fstype, mount.source
        ));
    }
    Ok(())
}

fn open(dir: &Path) -> Result<OwnedFd, DiskError> {
    rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| io("opening", dir)(e.into()))
}

/// Creates `data` if missing, puts what is in it into project `id` (a
/// walk only when the directory is not in it yet: an appspace made before
/// its file system had quotas, or data put back by a restore), and sets
/// the limit.
pub(crate) async fn attach(data: &Path, id: u32, bytes: u64) -> Result<(), DiskError> {
    std::fs::create_dir_all(data).map_err(io("creating", data))?;
    let dir = data.to_owned();
    tokio::task::spawn_blocking(move || ds_sandbox::data_dir::assign_project(&dir, id))
        .await
        .map_err(|e| io("walking", data)(std::io::Error::other(e)))??;
    let fd = open(data)?;
    ds_sandbox::sys::set_project_limit(fd.as_fd(), id, bytes)
        .map_err(io("setting the project quota of", data))
}

/// Bytes project `id` uses.
pub(crate) fn usage(data: &Path, id: u32) -> Result<u64, DiskError> {
    let fd = open(data)?;
    ds_sandbox::sys::project_usage(fd.as_fd(), id).map_err(io("reading the project quota of", data))
}

/// Sets the limit to `bytes` (0 lifts it); refused below use.
pub(crate) fn resize(data: &Path, id: u32, bytes: u64) -> Result<(), DiskError> {
    if bytes > 0 {
        let used = usage(data, id)?;
        if used >= bytes {
            return Err(DiskError::BelowUse { used, limit: bytes });
        }
    }
    let fd = open(data)?;
    ds_sandbox::sys::set_project_limit(fd.as_fd(), id, bytes)
        .map_err(io("setting the project quota of", data))
}
