//! Disk images: where the file system has no project quotas, each
//! appspace gets a file system of its own, an ext4 in the sparse file
//! `<home>/disk.img` (root's, `0600`), loop-mounted by the host at
//! `<home>/disk` (`nosuid,nodev,noexec`), its data directory at
//! `<home>/disk/data`. The app gets `ENOSPC` when its file system is full;
//! nothing it writes can fill the host's. The image is sparse: it takes
//! on the host's disk what the appspace has written (plus ext4's own few
//! MiB), not its limit.
//!
//! A restore's staging directory is `<home>/disk/.restoring`, inside the
//! same file system, so a restore renames as it does elsewhere (and needs
//! room for both copies inside the limit while it runs).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{io, run, run_allowing, DiskError};

/// The mount point, inside the appspace's home.
pub(crate) const MOUNT: &str = "disk";
const IMAGE: &str = "disk.img";
const OPTIONS: &str = "loop,nosuid,nodev,noexec,noatime";
/// The largest journal an image gets, MiB (what mke2fs gives 128 MiB to
/// 1 GiB file systems; plenty for an app's writes).
const JOURNAL_MIB: u32 = 16;

/// Whether images can be made and mounted here; if not, why.
pub(crate) fn available() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("disk images need the host to run as root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("no /dev/loop-control (no loop devices)".into());
    }
    for tool in [
        "mkfs.ext4",
        "mount",
        "umount",
        "resize2fs",
        "e2fsck",
        "losetup",
    ] {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        if !found {
            return Err(format!("{tool} is not installed (e2fsprogs, mount)"));
        }
    }
    Ok(())
}

pub(crate) fn paths(home: &Path) -> (PathBuf, PathBuf) {
    (home.join(IMAGE), home.join(MOUNT))
}

/// Whether `mount_point` has a file system mounted on it.
fn mounted(mount_point: &Path) -> Result<bool, DiskError> {
    let Some(parent) = mount_point.parent() else {
        return Ok(false);
    };
    let under = match std::fs::symlink_metadata(mount_point) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("reading", mount_point)(e)),
    };
    let above = std::fs::metadata(parent).map_err(io("reading", parent))?;
    Ok(under.dev() != above.dev())
}

/// Makes the image (when missing: a sparse file of `bytes` with a new
/// ext4 in it), mounts it (when not mounted), and makes the data
/// directory in it (when missing).
pub(crate) async fn attach(home: &Path, data: &Path, bytes: u64) -> Result<(), DiskError> {
    let (image, mount_point) = paths(home);
    std::fs::create_dir_all(home).map_err(io("creating", home))?;
    if !image.exists() {
        create(&image, bytes).await?;
    }
    if !mounted(&mount_point)? {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&mount_point)
            .map_err(io("creating", &mount_point))?;
        mount(&image, &mount_point).await?;
    }
    std::fs::create_dir_all(data).map_err(io("creating", data))
}

/// A sparse file of `bytes` with an ext4 in it: no blocks reserved for
/// root (the app gets the whole limit), inode tables and journal left for
/// the kernel to initialise as they are used (the image stays sparse).
/// The journal is at most [`JOURNAL_MIB`]: mke2fs would give a 4 GiB
/// file system 64 MiB, which resize2fs never shrinks, so that a default
/// image could not be lowered below ~110 MiB later.
async fn create(image: &Path, bytes: u64) -> Result<(), DiskError> {
    let partial = image.with_extension("img.new");
    let _ = std::fs::remove_file(&partial);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io("creating", &partial))?;
    file.set_len(bytes).map_err(io("sizing", &partial))?;
    drop(file);
    let journal = format!("size={JOURNAL_MIB}");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "-q".as_ref(),
        "-F".as_ref(),
        "-m".as_ref(),
        "0".as_ref(),
        "-E".as_ref(),
        "lazy_itable_init=1,lazy_journal_init=1,nodiscard".as_ref(),
    ];
    // Up to 1 GiB mke2fs's own choice is that size or smaller.
    if bytes > 1 << 30 {
        args.push(std::ffi::OsStr::new("-J"));
        args.push(std::ffi::OsStr::new(&journal));
    }
    args.push(partial.as_os_str());
    let made = run("mkfs.ext4", &args, image).await;
    if let Err(e) = made {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, image).map_err(io("moving into place", image))
}

async fn mount(image: &Path, mount_point: &Path) -> Result<(), DiskError> {
    run(
        "mount",
        &[
            "-t".as_ref(),
            "ext4".as_ref(),
            "-o".as_ref(),
            OPTIONS.as_ref(),
            image.as_os_str(),
            mount_point.as_os_str(),
        ],
        image,
    )
    .await
    .map(drop)
}

/// Unmounts the image (the loop device goes with it), if mounted.
pub(crate) async fn detach(home: &Path) -> Result<(), DiskError> {
    let (image, mount_point) = paths(home);
    if !mounted(&mount_point)? {
        return Ok(());
    }
    run("umount", &[mount_point.as_os_str()], &image)
        .await
        .map(drop)
}

/// Bytes in use on the appspace's file system (what ext4 counts as
/// allocated, its own journal and tables included).
pub(crate) fn usage(home: &Path) -> Result<u64, DiskError> {
    let (_, mount_point) = paths(home);
    let st =
        rustix::fs::statvfs(&mount_point).map_err(|e| io("measuring", &mount_point)(e.into()))?;
    Ok((st.f_blocks - st.f_bfree) * st.f_frsize)
}

/// Grows the mounted file system to fill `bytes` (its device already
/// that large).
fn grow_online(mount_point: &Path, bytes: u64) -> Result<(), DiskError> {
    use std::os::fd::AsFd;
    let fd = rustix::fs::open(
        mount_point,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| io("opening", mount_point)(e.into()))?;
    let st = rustix::fs::fstatvfs(&fd).map_err(|e| io("measuring", mount_point)(e.into()))?;
    ds_sandbox::sys::ext4_grow(fd.as_fd(), bytes / st.f_frsize)
        .map_err(io("growing the file system on", mount_point))
}

/// resize2fs's refusal to shrink below its (cautious) estimate of what the
/// file system needs, said in bytes.
fn smallest(e: DiskError, block: u64) -> DiskError {
    if let DiskError::Tool { detail, .. } = &e {
        let blocks = detail
            .split("smaller than minimum (")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(blocks) = blocks {
            return DiskError::TooSmall {
                smallest: blocks * block,
            };
        }
    }
    e
}

/// Waits until the image's file system is gone from the kernel (its loop
/// device detached): `umount` only takes it out of the host's mount
/// table, and a sandbox that has just stopped may still hold it in its
/// own mount namespace for a moment. Nothing may touch the image before.
async fn released(image: &Path) -> Result<(), DiskError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if loop_device(image).await.is_err() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(DiskError::Tool {
                program: "umount",
                path: image.to_owned(),
                detail: "unmounted, but the file system is still in use after 10 s".into(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The loop device the image is attached to.
async fn loop_device(image: &Path) -> Result<String, DiskError> {
    let out = run(
        "losetup",
        &[
            "--noheadings".as_ref(),
            "--output".as_ref(),
            "NAME".as_ref(),
            "--associated".as_ref(),
            image.as_os_str(),
        ],
        image,
    )
    .await?;
    out.lines()
        .next()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .ok_or_else(|| DiskError::Tool {
            program: "losetup",
            path: image.to_owned(),
            detail: "the image is not attached to a loop device".into(),
        })
}

/// Grows the image and its file system while mounted when the kernel lets
/// us (online resizing needs `CAP_SYS_RESOURCE`), else resizes them
/// unmounted, which needs `stopped` (nothing may write meanwhile): without
/// it, [`DiskError::Running`] says to stop the appspace and call again.
pub(crate) async fn resize(
    home: &Path,
    data: &Path,
    old: u64,
    bytes: u64,
    stopped: bool,
) -> Result<(), DiskError> {
    let (image, mount_point) = paths(home);
    attach(home, data, old).await?;
    let used = usage(home)?;
    if used >= bytes {
        return Err(DiskError::BelowUse { used, limit: bytes });
    }
    let set_len = |len: u64| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .and_then(|f| f.set_len(len))
            .map_err(io("resizing", &image))
    };
    if bytes >= old && !stopped {
        set_len(bytes)?;
        let dev = loop_device(&image).await?;
        run(
            "losetup",
            &["--set-capacity".as_ref(), dev.as_ref()],
            &image,
        )
        .await?;
        return match grow_online(&mount_point, bytes) {
            Err(DiskError::Io { source, .. })
                if source.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) =>
            {
                Err(DiskError::Running(format!(
                    "the kernel refused to grow it mounted: {source}"
                )))
            }
            other => other,
        };
    }
    if !stopped {
        return Err(DiskError::Running("ext4 cannot shrink mounted".into()));
    }
    let block = rustix::fs::statvfs(&mount_point)
        .map(|st| st.f_frsize)
        .unwrap_or(1024);
    detach(home).await?;
    let kib = format!("{}K", bytes / 1024);
    let resized = async {
        released(&image).await?;
        if bytes >= old {
            set_len(bytes)?;
        }
        // resize2fs insists on a freshly checked file system; e2fsck's 1
        // means it fixed something, which is fine.
        run_allowing(
            "e2fsck",
            &["-f".as_ref(), "-p".as_ref(), image.as_os_str()],
            &image,
            &[0, 1],
        )
        .await?;
        run("resize2fs", &[image.as_os_str(), kib.as_ref()], &image)
            .await
            .map_err(|e| smallest(e, block))?;
        if bytes < old {
            set_len(bytes)?;
        }
        Ok::<(), DiskError>(())
    }
    .await;
    // Mounted again whether or not it was resized: the data is served either way.
    let remounted = mount(&image, &mount_point).await;
    resized?;
    remounted
}
