//! Identity and capabilities: the sandbox runs as [`INSIDE_ID`] and, once
//! set up, holds no capability in any set.

use std::io;

use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::spec::INSIDE_ID;

/// Errors changing identity or capabilities.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Call {
        /// What we were doing.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

fn call<T>(what: &'static str, r: rustix::io::Result<T>) -> Result<T, CapsError> {
    r.map_err(|e| CapsError::Call {
        what,
        source: e.into(),
    })
}

/// Highest capability number the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Becomes [`INSIDE_ID`] inside the new user namespace while keeping our
/// capabilities there, and makes them ambient so that they survive the
/// exec into the agent (which needs them to mount `/proc`).
///
/// System calls only (no allocation): runs in the launcher's freshly cloned
/// child between clone and exec. `last_cap` comes from [`last_cap`], read
/// before the clone.
pub fn become_inside_user_keeping_caps(last_cap: u32) -> Result<(), rustix::io::Errno> {
    rustix::thread::set_keep_capabilities(true)?;
    let gid = rustix::process::Gid::from_raw(INSIDE_ID);
    let uid = rustix::process::Uid::from_raw(INSIDE_ID);
    rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    rustix::thread::set_thread_res_uid(uid, uid, uid)?;
    let all = CapabilitySet::all();
    let sets = CapabilitySets {
        effective: all,
        permitted: all,
        inheritable: all,
    };
    rustix::thread::set_capabilities(None, sets)?;
    for cap in 0..=last_cap {
        if let Some(c) = capability_from_number(cap) {
            rustix::thread::configure_capability_in_ambient_set(c, true)?;
        }
    }
    Ok(())
}

/// Capability number `n` as a one-bit set, if it fits the kernel ABI.
pub(crate) fn capability_from_number(n: u32) -> Option<CapabilitySet> {
    (n < 64).then(|| CapabilitySet::from_bits_retain(1u64 << n))
}

/// Drops every capability from every set: bounding (so no exec can regain
/// any), ambient, inheritable, permitted and effective; and sets
/// `no_new_privs` so that setuid binaries and file capabilities are inert.
pub fn drop_all() -> Result<(), CapsError> {
    for cap in 0..=last_cap() {
        if let Some(c) = capability_from_number(cap) {
            call(
                "dropping a bounding-set capability",
                rustix::thread::remove_capability_from_bounding_set(c),
            )?;
        }
    }
    call(
        "clearing the ambient set",
        rustix::thread::clear_ambient_capability_set(),
    )?;
    call(
        "setting no_new_privs",
        rustix::thread::set_no_new_privs(true),
    )?;
    call(
        "keeping capabilities off across setuid",
        rustix::thread::set_keep_capabilities(false),
    )?;
    call("clearing capability sets", clear_sets())?;
    Ok(())
}

/// Empties the effective, permitted and inheritable sets of the calling
/// thread.
pub(crate) fn clear_sets() -> rustix::io::Result<()> {
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        },
    )
}
