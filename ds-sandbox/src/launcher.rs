//! Stage 1, the launcher: runs outside the sandbox with the caller's
//! privileges. Prepares the data directory and the cgroup, starts stage 2
//! as a fresh process (no setup code ever runs in a forked copy of us),
//! writes its id maps, moves it into the cgroup, waits, reports and cleans
//! up so that nothing is left behind.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::cgroup::{Cgroup, CgroupError};
use crate::namespaces::{self, NamespaceError};
use crate::spec::SandboxSpec;
use crate::supervise::Supervisor;

/// Exit status when the sandbox could not be set up.
pub const SETUP_FAILED: i32 = 125;

/// Errors of the launcher, naming the step.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The data directory could not be prepared.
    #[error("preparing data directory {path}: {source}")]
    Data {
        /// Which.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The cgroup could not be created.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Id maps could not be written.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// Talking to stage 2 failed.
    #[error("starting the sandbox: {0}")]
    Stage(std::io::Error),
}

/// Sends the spec and runs the id-map handshake with stage 2.
fn handshake(
    sync: &mut UnixStream,
    spec: &SandboxSpec,
    pid: u32,
    cgroup: &Cgroup,
) -> Result<(), LaunchError> {
    // First, while stage 2 is still starting up: joining a v1 cgroup can
    // wait for an RCU grace period, and this hides that behind its exec.
    // It must precede stage 2's cgroup namespace and forks, which only
    // happen after our "G".
    cgroup.add_process(pid)?;
    let json = serde_json::to_vec(spec).map_err(|e| LaunchError::Stage(e.into()))?;
    sync.write_all(&(json.len() as u32).to_be_bytes())
        .map_err(LaunchError::Stage)?;
    sync.write_all(&json).map_err(LaunchError::Stage)?;
    let mut byte = [0u8; 1];
    // EOF here means stage 2 failed and said why on stderr.
    sync.read_exact(&mut byte).map_err(LaunchError::Stage)?;
    namespaces::write_id_maps(pid, spec.host_uid, spec.host_gid)?;
    sync.write_all(b"G").map_err(LaunchError::Stage)?;
    Ok(())
}

/// Makes `dir` (created if missing) and everything in it owned by the
/// appspace's host ids. Symlinks are changed, never followed.
fn prepare_data_dir(dir: &Path, uid: u32, gid: u32) -> Result<(), LaunchError> {
    let err = |source| LaunchError::Data {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    if rustix::process::geteuid().is_root() {
        chown_tree(dir, uid, gid).map_err(err)?;
    } else {
        let meta = std::fs::metadata(dir).map_err(err)?;
        if meta.uid() != uid {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "not owned by the calling user (run as root to hand it to the appspace)",
            )));
        }
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Runs `spec` to completion and returns the exit status to report.
pub fn run(spec: &SandboxSpec) -> Result<i32, LaunchError> {
    prepare_data_dir(&spec.data_dir, spec.host_uid, spec.host_gid)?;
    if rustix::process::geteuid().is_root() {
        // The sandbox cannot drop supplementary groups itself (setgroups is
        // denied in its user namespace), so it must not inherit root's.
        rustix::thread::set_thread_groups(&[]).map_err(|e| LaunchError::Stage(e.into()))?;
    }
    let cgroup = Cgroup::create(
        &format!("{}-{}", spec.name, std::process::id()),
        &spec.limits,
    )?;
    let result = run_in(spec, &cgroup);
    let usage = cgroup.usage();
    cgroup.remove();
    let status = result?;
    if spec.report {
        eprintln!(
            "ds-sandbox: usage: cpu_ms={} memory_peak_bytes={} oom_kills={}",
            usage.cpu_ns / 1_000_000,
            usage.memory_peak,
            usage.oom_kills
        );
    }
    if usage.oom_kills > 0 {
        eprintln!(
            "ds-sandbox: killed: out of memory (the sandbox's limit is {} MiB; {} OOM kill(s))",
            spec.limits.memory_bytes >> 20,
            usage.oom_kills
        );
    }
    Ok(status)
}

fn run_in(spec: &SandboxSpec, cgroup: &Cgroup) -> Result<i32, LaunchError> {
    let (mut ours, theirs) = UnixStream::pair().map_err(LaunchError::Stage)?;
    // Stage 2 inherits its end: clear close-on-exec on that one only.
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())
        .map_err(|e| LaunchError::Stage(e.into()))?;
    let mut supervisor = Supervisor::new().map_err(LaunchError::Stage)?;
    let mut child = Command::new("/proc/self/exe")
        .arg0("ds-sandbox")
        .args(["__stage2", "--sync-fd", &theirs.as_raw_fd().to_string()])
        .env_clear()
        .spawn()
        .map_err(LaunchError::Stage)?;
    drop(theirs);
    let pid = child.id();
    if let Err(e) = handshake(&mut ours, spec, pid, cgroup) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    drop(ours);
    let exit = supervisor
        .wait(pid as i32, false)
        .map_err(LaunchError::Stage)?;
    Ok(exit.status())
}
