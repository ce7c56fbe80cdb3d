//! Namespaces: the sandbox gets its own user, mount, network, pid, ipc,
//! uts and cgroup namespaces.

use std::fs;
use std::io;

use rustix::thread::UnshareFlags;

use crate::spec::INSIDE_ID;

/// Errors entering or configuring namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// `unshare` failed.
    #[error("unshare({what}): {source} (are unprivileged user namespaces enabled? see /proc/sys/user/max_user_namespaces)")]
    Unshare {
        /// Which namespaces.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Writing an id map of the child failed.
    #[error("writing /proc/{pid}/{file}: {source}")]
    IdMap {
        /// The child.
        pid: u32,
        /// Which file.
        file: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Setting the hostname failed.
    #[error("setting the sandbox hostname: {0}")]
    Hostname(io::Error),
    /// Bringing up loopback failed.
    #[error("bringing up lo in the sandbox's network namespace: {0}")]
    Loopback(io::Error),
}

/// Enters new user, mount, network, ipc and uts namespaces, and makes the
/// next child start a new pid namespace. The cgroup namespace comes later,
/// once the launcher has moved us into our cgroup (its root is the cgroup
/// we are in when we unshare it).
pub fn enter() -> Result<(), NamespaceError> {
    let flags = UnshareFlags::NEWUSER
        | UnshareFlags::NEWNS
        | UnshareFlags::NEWNET
        | UnshareFlags::NEWIPC
        | UnshareFlags::NEWUTS
        | UnshareFlags::NEWPID;
    crate::sys::unshare_namespaces(flags).map_err(|e| NamespaceError::Unshare {
        what: "user, mount, net, ipc, uts, pid",
        source: e.into(),
    })
}

/// Enters a new cgroup namespace rooted at the current cgroup.
pub fn enter_cgroup() -> Result<(), NamespaceError> {
    crate::sys::unshare_namespaces(UnshareFlags::NEWCGROUP).map_err(|e| NamespaceError::Unshare {
        what: "cgroup",
        source: e.into(),
    })
}

/// Launcher side: maps exactly one id into the child's user namespace,
/// inside [`INSIDE_ID`] to the given host ids, and denies `setgroups`.
pub fn write_id_maps(pid: u32, host_uid: u32, host_gid: u32) -> Result<(), NamespaceError> {
    let put = |file: &'static str, text: String| {
        fs::write(format!("/proc/{pid}/{file}"), text).map_err(|source| NamespaceError::IdMap {
            pid,
            file,
            source,
        })
    };
    // "deny" must be written before gid_map for an unprivileged writer, and
    // keeps the app from ever dropping or adding supplementary groups.
    put("setgroups", "deny".into())?;
    put("uid_map", format!("{INSIDE_ID} {host_uid} 1\n"))?;
    put("gid_map", format!("{INSIDE_ID} {host_gid} 1\n"))?;
    Ok(())
}

/// The TCP congestion control the sandbox's own connections use: every
/// one of them is on `lo`, where nothing is ever lost or queued.
const LOOPBACK_CONGESTION_CONTROL: &str = "reno";

/// Inside: a neutral hostname and a working, unpaced loopback.
pub fn configure_uts_and_net(hostname: &str) -> Result<(), NamespaceError> {
    rustix::system::sethostname(hostname.as_bytes())
        .map_err(|e| NamespaceError::Hostname(e.into()))?;
    // Domain name too: the host's would otherwise leak.
    rustix::system::setdomainname(b"(none)").map_err(|e| NamespaceError::Hostname(e.into()))?;
    crate::sys::bring_loopback_up().map_err(NamespaceError::Loopback)?;
    // A new network namespace inherits the host's default congestion
    // control. Hosts often choose BBR, which paces every send with a timer:
    // right towards the internet, pure cost on a loopback (a download
    // proxied through the agent ran at 0.65x a direct one under BBR, at
    // 1.2-1.4x with reno). Reno is built into every kernel and allowed in
    // every namespace. The namespace's /proc/sys/net is the one we see
    // here (the host's procfs is still mounted, but net sysctls follow the
    // reader's namespace). Best effort: a kernel or a read-only /proc/sys
    // that refuses costs speed, not safety.
    let _ = fs::write(
        "/proc/sys/net/ipv4/tcp_congestion_control",
        LOOPBACK_CONGESTION_CONTROL,
    );
    Ok(())
}
