//! The launcher's cloned child (see `crate::launcher`): everything it
//! runs between the clone and its exec of the agent lives here, beside
//! the clone, so that the contract the clone imposes (no allocation, no
//! locks: system calls on memory prepared before) is kept by this module
//! alone and callers get a safe function.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use super::CArgv;
use crate::launcher::{
    AGENT_CHANNEL_FD, AGENT_HANDOFF_FD, AGENT_SYNC_FD, HIGH_FD_FLOOR, SETUP_FAILED,
};
use crate::mounts::SOURCE_FD_BASE;

/// Steps of the cloned child, as reported on the sync socket.
pub(crate) const STEP_SOURCE: u16 = 0; // + the source's index
pub(crate) const STEP_CGROUP: u16 = 0xffef;
pub(crate) const STEP_IDENTITY: u16 = 0xfff0;
pub(crate) const STEP_DUP: u16 = 0xfff1;
pub(crate) const STEP_EXEC: u16 = 0xfff2;

/// Everything the cloned child needs, prepared before the clone so that
/// the child never allocates.
pub(crate) struct ChildPlan {
    pub(crate) cgroup_join: Vec<CString>,
    pub(crate) sources: Vec<(CString, bool)>,
    pub(crate) sync: OwnedFd,
    pub(crate) channel: Option<OwnedFd>,
    pub(crate) handoff: Option<OwnedFd>,
    pub(crate) exe: OwnedFd,
    pub(crate) argv: CArgv,
    pub(crate) envp: CArgv,
    pub(crate) last_cap: u32,
}

/// Clones the sandbox's first process into the namespaces `flags` makes;
/// it runs [`child`] (set up by `plan`, prepared before, so that it never
/// allocates) and never returns; we get its pid. The launcher is
/// single-threaded, as the clone without a new stack requires.
pub(crate) fn clone_child(flags: libc::c_int, plan: &ChildPlan) -> std::io::Result<i32> {
    match super::clone_into_namespaces(flags)? {
        super::Forked::Child => child(plan),
        super::Forked::Parent(pid) => Ok(pid),
    }
}

/// [`clone_child`], with the child born in the cgroup `cgroup` is open on
/// (v2; `plan.cgroup_join` is then empty). `Err` if the kernel does not
/// offer `clone3(CLONE_INTO_CGROUP)`: nothing was cloned, and the caller
/// falls back to [`clone_child`] and a self-join.
pub(crate) fn clone_child_into_cgroup(
    flags: libc::c_int,
    cgroup: std::os::fd::BorrowedFd<'_>,
    plan: &ChildPlan,
) -> std::io::Result<i32> {
    match super::clone3_into_cgroup(flags, cgroup)? {
        super::Forked::Child => child(plan),
        super::Forked::Parent(pid) => Ok(pid),
    }
}

/// The cloned child: PID 1 of the new pid namespace, in the new user,
/// mount, network, ipc and uts namespaces, still with the caller's host uid.
/// System calls only until the exec.
fn child(plan: &ChildPlan) -> ! {
    let sync = plan.sync.as_raw_fd();
    let fail = |step: u16, errno: rustix::io::Errno| -> ! {
        let mut msg = [0u8; 7];
        msg[0] = b'E';
        msg[1..3].copy_from_slice(&step.to_be_bytes());
        msg[3..7].copy_from_slice(&errno.raw_os_error().to_be_bytes());
        let _ = rustix::io::write(&plan.sync, &msg);
        super::exit_now(SETUP_FAILED)
    };
    // 1. The view's sources, opened while we still have the caller's host
    //    uid and from inside the new mount namespace.
    for (i, (path, required)) in plan.sources.iter().enumerate() {
        let flags = rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC;
        match rustix::fs::open(path.as_c_str(), flags, rustix::fs::Mode::empty()) {
            Ok(fd) => {
                if super::dup_to(fd.as_raw_fd(), SOURCE_FD_BASE + i as i32).is_err() {
                    fail(STEP_DUP, rustix::io::Errno::BADF);
                }
            }
            Err(e) if *required => fail(STEP_SOURCE + i as u16, e),
            // An optional source that is absent leaves its number free:
            // nothing our caller leaked may sit there for the agent to
            // take as that source.
            Err(_) => {
                let n = (SOURCE_FD_BASE + i as i32) as u32;
                if super::close_range(n, n, false).is_err() {
                    fail(STEP_DUP, rustix::io::Errno::BADF);
                }
            }
        }
    }
    // 2. Wait for the launcher to create our cgroup and map our ids.
    let mut go = [0u8; 1];
    if rustix::io::write(&plan.sync, b"U").is_err()
        || !matches!(rustix::io::read(&plan.sync, &mut go), Ok(1))
        || go != *b"G"
    {
        super::exit_now(SETUP_FAILED);
    }
    // 3. Into the cgroup, before we can fork, and while we still have the
    //    caller's host uid (the owner of its files). We are single-threaded,
    //    so "0" moves the whole process (see `CgroupPlan::self_join_paths` for
    //    why we move ourselves). Nothing to do if we were born in it
    //    (clone3 with CLONE_INTO_CGROUP, cgroup v2).
    for path in &plan.cgroup_join {
        let flags = rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC;
        let joined = rustix::fs::open(path.as_c_str(), flags, rustix::fs::Mode::empty())
            .and_then(|file| rustix::io::write(&file, b"0"));
        if let Err(e) = joined {
            fail(STEP_CGROUP, e);
        }
    }
    // 4. The inside uid, keeping capabilities (ambient) for the agent.
    if let Err(e) = crate::caps::become_inside_user_keeping_caps(plan.last_cap) {
        fail(STEP_IDENTITY, e);
    }
    // Die with the launcher (set after the uid change, which clears it).
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    // 5. Become the agent.
    if super::dup_to(sync, AGENT_SYNC_FD).is_err() {
        fail(STEP_DUP, rustix::io::Errno::BADF);
    }
    if let Some(channel) = &plan.channel {
        if super::dup_to(channel.as_raw_fd(), AGENT_CHANNEL_FD).is_err() {
            fail(STEP_DUP, rustix::io::Errno::BADF);
        }
    }
    if let Some(handoff) = &plan.handoff {
        if super::dup_to(handoff.as_raw_fd(), AGENT_HANDOFF_FD).is_err() {
            fail(STEP_DUP, rustix::io::Errno::BADF);
        }
    }
    // 6. Nothing else crosses into the agent: what lies between the
    //    numbers it is handed is closed, and everything at or above
    //    HIGH_FD_FLOOR (our own lifted descriptors, the binary we exec, and
    //    anything our caller leaked) is made close-on-exec, so the exec
    //    closes it after using the binary's descriptor.
    let first_free = (SOURCE_FD_BASE + plan.sources.len() as i32) as u32;
    let unused = |fd: i32, used: bool| {
        if used {
            Ok(())
        } else {
            super::close_range(fd as u32, fd as u32, false)
        }
    };
    let cleared = super::close_range(3, (AGENT_HANDOFF_FD - 1) as u32, false)
        .and_then(|()| unused(AGENT_HANDOFF_FD, plan.handoff.is_some()))
        .and_then(|()| unused(AGENT_CHANNEL_FD, plan.channel.is_some()))
        .and_then(|()| {
            if first_free < HIGH_FD_FLOOR as u32 {
                super::close_range(first_free, HIGH_FD_FLOOR as u32 - 1, false)
            } else {
                Ok(())
            }
        })
        .and_then(|()| super::close_range(HIGH_FD_FLOOR as u32, u32::MAX, true));
    if cleared.is_err() {
        fail(STEP_DUP, rustix::io::Errno::BADF);
    }
    let e = super::exec_fd(plan.exe.as_fd(), &plan.argv, &plan.envp);
    fail(
        STEP_EXEC,
        rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::NOEXEC),
    )
}
