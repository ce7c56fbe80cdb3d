//! The agent's fork of the app (see `crate::agent`): everything the child
//! runs between the fork and its exec of the app lives here, beside the
//! fork, so that the contract the fork imposes (system calls only, on
//! memory prepared before; the agent has a second thread) is kept by this
//! module alone and the agent gets a safe function.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use super::CArgv;

/// Exit status when the command was not found.
pub(crate) const NOT_FOUND: i32 = 127;
/// Exit status when the command could not be executed.
pub(crate) const CANNOT_EXECUTE: i32 = 126;
/// Reported on the status pipe when the app's Landlock layer failed.
pub(crate) const LANDLOCK_FAILED: i32 = -1;

/// Everything the app's process needs before its exec, prepared by the
/// agent before the fork.
#[derive(Debug)]
pub(crate) struct AppChild {
    /// The program, as a path inside the sandbox.
    pub(crate) program: CString,
    pub(crate) argv: CArgv,
    pub(crate) envp: CArgv,
    /// The app's own Landlock layer, applied in the child only.
    pub(crate) landlock: landlock::RulesetCreated,
    pub(crate) allow_missing_landlock: bool,
    /// The write end of the close-on-exec status pipe: the child writes
    /// the errno of a failed exec (or [`LANDLOCK_FAILED`]) there; a
    /// successful exec closes it.
    pub(crate) status: OwnedFd,
}

/// Forks the app's process: it leaves the agent's session and signal
/// state, applies its Landlock layer, keeps only stdio (and the status
/// pipe, close-on-exec, at 3) and execs the program; we get its pid.
pub(crate) fn fork_app(child: AppChild) -> std::io::Result<i32> {
    match super::fork()? {
        super::Forked::Child => run(child),
        super::Forked::Parent(pid) => Ok(pid),
    }
}

fn run(child: AppChild) -> ! {
    let status = child.status.as_raw_fd();
    let _ = rustix::process::setsid();
    super::reset_signal_dispositions();
    crate::supervise::unblock_all_signals();
    if crate::landlock_policy::apply(child.landlock, child.allow_missing_landlock).is_err() {
        super::report_errno(status, LANDLOCK_FAILED);
        super::exit_now(crate::launcher::SETUP_FAILED);
    }
    // Only stdio and the (close-on-exec) status pipe survive.
    if super::dup_cloexec_to(status, 3).is_err() || super::close_range(4, u32::MAX, false).is_err()
    {
        super::exit_now(crate::launcher::SETUP_FAILED);
    }
    let e = super::exec_path(&child.program, &child.argv, &child.envp);
    let errno = e.raw_os_error().unwrap_or(0);
    super::report_errno(3, errno);
    super::exit_now(if errno == libc::ENOENT {
        NOT_FOUND
    } else {
        CANNOT_EXECUTE
    })
}
