//! rlimits: a backstop behind the cgroup (which is the real limit), and
//! the default scheduling priority.

use std::io;

use rustix::process::{Resource, Rlimit};

use crate::spec::Limits;

/// Errors setting an rlimit or the priority.
#[derive(Debug, thiserror::Error)]
#[error("setting {what}: {source}")]
pub struct RlimitError {
    what: &'static str,
    source: io::Error,
}

/// Sets hard and soft limits: no core dumps (they could leak the agent's
/// memory), bounded open files, bounded file size (the data quota lands
/// with the host), and, when the appspace has a host uid of its own, a
/// process count (RLIMIT_NPROC counts per host uid). Also brings a raised
/// priority (negative nice) back to the default: a sandbox started from
/// one of the host's front-door threads inherits their nice -5, which the
/// agent and the app must not keep (lowering one's own priority needs no
/// privilege).
pub fn apply(limits: &Limits, own_host_uid: bool) -> Result<(), RlimitError> {
    // Only ever lowered: a host an admin runs at a positive nice keeps its
    // sandboxes there (raising it would need the capability just dropped).
    let nice = rustix::process::getpriority_process(None).map_err(|e| RlimitError {
        what: "reading the priority",
        source: e.into(),
    })?;
    if nice < 0 {
        rustix::process::setpriority_process(None, 0).map_err(|e| RlimitError {
            what: "priority (nice 0)",
            source: e.into(),
        })?;
    }
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
    set("rlimit core", Resource::Core, 0)?;
    set("rlimit nofile", Resource::Nofile, limits.open_files)?;
    set("rlimit memlock", Resource::Memlock, 64 * 1024)?;
    if own_host_uid {
        // The agent and a few helpers on top of the cgroup's pids limit.
        set("rlimit nproc", Resource::Nproc, limits.pids + 8)?;
    }
    Ok(())
}
