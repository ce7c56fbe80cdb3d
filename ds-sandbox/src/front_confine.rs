//! Confining an unprivileged network process: the front door once it holds
//! every descriptor it needs (docs/privsep.md). One entry point,
//! [`confine`], for a single-threaded caller (uids, gids and capabilities
//! are per thread in the kernel: threads made later inherit them, threads
//! made before would keep the old ones). In order, and why there:
//!
//! 1. the bounding and ambient capability sets emptied, while we may
//!    (dropping from the bounding set needs CAP_SETPCAP, gone after 3);
//! 2. no supplementary groups, then the gid, then the uid (the uid last:
//!    changing the others needs the privileges it takes away); leaving
//!    uid 0 clears the permitted and effective sets;
//! 3. the parent-death signal (a changed uid clears it, so after 2), and
//!    a check that the parent is still the one that started us;
//!    `no_new_privs`, then every capability set emptied explicitly;
//! 4. Landlock with every filesystem right handled and no rule (no file
//!    can be opened), and the abstract-socket and signal scopes;
//! 5. the seccomp allow-list ([`crate::front_rules`]), last, since the
//!    steps above use calls it refuses.
//!
//! Once its threads exist, the process calls [`tighten`]: phase 2.
//!
//! `ds-host __front-selftest` then tries what a compromised front door
//! would.

use std::os::fd::OwnedFd;

use landlock::{
    Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetStatus, Scope, ABI,
};

use crate::seccomp_filter::{self, Program};

/// Why confinement failed (the process must then not serve).
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// A privilege step failed.
    #[error("front door confinement: {what}: {source}")]
    Privileges {
        /// Which step.
        what: &'static str,
        /// Why.
        source: rustix::io::Errno,
    },
    /// Landlock could not be applied, or not at all.
    #[error("front door confinement: Landlock: {0}")]
    Landlock(String),
    /// The seccomp filter could not be loaded.
    #[error("front door confinement: {0}")]
    Seccomp(#[from] seccomp_filter::SeccompError),
}

/// What was applied, for `dsctl status` and the self-test.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Confinement {
    /// The uid now in force.
    pub uid: u32,
    /// The Landlock ABI the ruleset was enforced at (0: none).
    pub landlock_abi: i32,
    /// Whether Landlock enforced everything asked.
    pub landlock_full: bool,
    /// The seccomp phase loaded (1: the steady-state allow-list).
    pub seccomp_phase: u8,
}

fn step(what: &'static str, r: rustix::io::Result<()>) -> Result<(), ConfineError> {
    r.map_err(|source| ConfineError::Privileges { what, source })
}

/// Confines the calling process for good: becomes `ids` (uid, gid) if
/// given (the caller must be root then), dies with `parent` (a pid) if
/// given, drops every privilege, then Landlock and seccomp.
/// Single-threaded callers only (see the module).
pub fn confine(ids: Option<(u32, u32)>, parent: Option<u32>) -> Result<Confinement, ConfineError> {
    use rustix::thread as t;
    if ids.is_some() {
        for cap in 0..=crate::caps::last_cap() {
            if let Some(c) = crate::caps::capability_from_number(cap) {
                step(
                    "dropping a bounding-set capability",
                    t::remove_capability_from_bounding_set(c),
                )?;
            }
        }
    }
    step(
        "clearing the ambient set",
        t::clear_ambient_capability_set(),
    )?;
    if let Some((uid, gid)) = ids {
        step("dropping supplementary groups", t::set_thread_groups(&[]))?;
        let gid = rustix::fs::Gid::from_raw(gid);
        step("setting the gid", t::set_thread_res_gid(gid, gid, gid))?;
        let uid = rustix::fs::Uid::from_raw(uid);
        step("setting the uid", t::set_thread_res_uid(uid, uid, uid))?;
    }
    if let Some(parent) = parent {
        step(
            "setting the parent-death signal",
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)),
        )?;
        // Set after the parent died: then nothing would ever send it.
        if rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) != Some(parent) {
            return Err(ConfineError::Privileges {
                what: "checking the parent (it is gone)",
                source: rustix::io::Errno::SRCH,
            });
        }
    }
    step("setting no_new_privs", t::set_no_new_privs(true))?;
    step("clearing capability sets", crate::caps::clear_sets())?;
    let (landlock_abi, landlock_full) = no_filesystem()?;
    let program = seccomp_filter::program(Program::FrontDoor)?;
    // Asked before the filter, which refuses getuid.
    let uid = rustix::process::getuid().as_raw();
    seccomp_filter::load_without_listener(&program)?;
    Ok(Confinement {
        uid,
        landlock_abi,
        landlock_full,
        seccomp_phase: 1,
    })
}

/// Phase 2, once every thread the process will have exists: a second
/// filter on all of them at once (`SECCOMP_FILTER_FLAG_TSYNC`) that also
/// refuses `clone`, `socketpair` and `prctl`. Returns the phase now in
/// force.
pub fn tighten() -> Result<u8, ConfineError> {
    let program = seccomp_filter::program(Program::FrontDoorSteady)?;
    crate::sys::install_seccomp_filter_on_all_threads(&program)
        .map_err(|e| ConfineError::Seccomp(seccomp_filter::SeccompError::Load(e)))?;
    Ok(2)
}

/// Landlock: every filesystem right handled, no path allowed; abstract
/// sockets and signals scoped (ABI 6).
fn no_filesystem() -> Result<(i32, bool), ConfineError> {
    let abi = crate::landlock_policy::kernel_abi();
    if abi < 1 {
        return Err(ConfineError::Landlock("the kernel has no Landlock".into()));
    }
    let err = |e: landlock::RulesetError| ConfineError::Landlock(e.to_string());
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(ABI::V6))
        .map_err(err)?
        .scope(Scope::from_all(ABI::V6))
        .map_err(err)?
        .create()
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    match status.ruleset {
        RulesetStatus::NotEnforced => Err(ConfineError::Landlock("not enforced".into())),
        RulesetStatus::PartiallyEnforced => Ok((abi, false)),
        RulesetStatus::FullyEnforced => Ok((abi, true)),
    }
}

/// What the self-test is handed before confining: things a compromised
/// front door would go for.
#[derive(Debug)]
pub struct Targets {
    /// The host's state database (opened by path after confining).
    pub state_db: std::path::PathBuf,
    /// The admin socket (connected to after confining).
    pub admin_socket: std::path::PathBuf,
    /// `/proc/self/status`, opened before confining, read after.
    pub status: OwnedFd,
}

/// Tries, confined, what must fail: each entry is the attempt and `Ok`
/// with how it was refused, or `Err` with what it got (an escape).
pub fn selftest(targets: &Targets) -> Vec<(&'static str, Result<String, String>)> {
    fn refused<T>(r: std::io::Result<T>) -> Result<String, String> {
        match r {
            Err(e) => Ok(e.to_string()),
            Ok(_) => Err("it worked".into()),
        }
    }
    let errno = |r: rustix::io::Result<OwnedFd>| refused(r.map_err(std::io::Error::from));
    use rustix::net::{AddressFamily as F, SocketType as T};
    let mut out = vec![
        (
            "open /etc/shadow",
            refused(std::fs::File::open("/etc/shadow")),
        ),
        (
            "open the state database",
            refused(std::fs::File::open(&targets.state_db)),
        ),
        ("open /", refused(std::fs::File::open("/"))),
        (
            "create /tmp/x",
            refused(std::fs::File::create("/tmp/ds-front-selftest")),
        ),
        (
            "read /proc/self/maps",
            refused(std::fs::read("/proc/self/maps")),
        ),
        (
            "exec /bin/true",
            refused(std::process::Command::new("/bin/true").status()),
        ),
        (
            "connect to the admin socket",
            refused(std::os::unix::net::UnixStream::connect(
                &targets.admin_socket,
            )),
        ),
        ("ptrace pid 1", refused(crate::sys::try_ptrace_attach(1))),
        (
            "unshare a user namespace",
            refused(
                crate::sys::unshare_namespaces(rustix::thread::UnshareFlags::NEWUSER)
                    .map_err(std::io::Error::from),
            ),
        ),
        (
            "mount a tmpfs",
            refused(
                rustix::mount::mount(
                    "none",
                    "/tmp",
                    "tmpfs",
                    rustix::mount::MountFlags::empty(),
                    None,
                )
                .map_err(std::io::Error::from),
            ),
        ),
    ];
    for (name, family, kind) in [
        ("socket AF_UNIX", F::UNIX, T::STREAM),
        ("socket AF_INET", F::INET, T::STREAM),
        ("socket AF_INET6 (UDP)", F::INET6, T::DGRAM),
        ("socket AF_NETLINK", F::NETLINK, T::RAW),
        ("socket AF_PACKET", F::PACKET, T::RAW),
        ("socket AF_VSOCK", F::VSOCK, T::STREAM),
    ] {
        out.push((name, errno(rustix::net::socket(family, kind, None))));
    }
    out
}

/// The text of `/proc/self/status` through a descriptor opened before
/// confining (procfs makes it at each read, so it shows the process now).
pub fn status_of(status: &OwnedFd) -> String {
    let mut buf = vec![0u8; 8192];
    match rustix::io::pread(status, &mut buf, 0) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => format!("(reading /proc/self/status: {e})"),
    }
}
