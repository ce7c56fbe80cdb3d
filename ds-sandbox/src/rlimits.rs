//! rlimits: a backstop behind the cgroup (which is the real limit).

use std::io;

use rustix::process::{Resource, Rlimit};

use crate::spec::Limits;

/// Errors setting an rlimit.
#[derive(Debug, thiserror::Error)]
#[error("setting rlimit {what}: {source}")]
pub struct RlimitError {
    what: &'static str,
    source: io::Error,
}

/// Sets hard and soft limits: no core dumps (they could leak the agent's
/// memory), bounded open files, bounded file size (the data quota lands
/// with the host), and, when the appspace has a host uid of its own, a
/// process count (RLIMIT_NPROC counts per host uid).
pub fn apply(limits: &Limits, own_host_uid: bool) -> Result<(), RlimitError> {
    let set = |what, resource, n: u64| {
        rustix::process::setrlimit(
            resource,
            Rlimit {
                current: Some(n),
                maximum: Some(n),
            },
        )
        .map_err(|e| RlimitError {
            what,
            source: e.into(),
        })
    };
    set("core", Resource::Core, 0)?;
    set("nofile", Resource::Nofile, limits.open_files)?;
    set("memlock", Resource::Memlock, 64 * 1024)?;
    if own_host_uid {
        // The agent and a few helpers on top of the cgroup's pids limit.
        set("nproc", Resource::Nproc, limits.pids + 8)?;
    }
    Ok(())
}
