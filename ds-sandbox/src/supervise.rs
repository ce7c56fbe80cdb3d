//! Waiting for a child while forwarding signals to it. Used at every level:
//! the launcher waits for stage 2, stage 2 for the agent, and the agent (PID
//! 1 of the sandbox) for the app, reaping every orphan as init must.

use std::io;

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Signals passed on to the supervised child.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// How a child ended, as a shell would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called exit with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// The exit status to pass on: the code, or 128 + the signal number.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// Owns the blocked signals and the signalfd they arrive on.
#[derive(Debug)]
pub struct Supervisor {
    fd: SignalFd,
}

fn watched() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

impl Supervisor {
    /// Blocks the forwarded signals and SIGCHLD so that they queue on a
    /// signalfd. Children inherit the mask: the app must unblock
    /// ([`unblock_all_signals`]) before exec.
    pub fn new() -> io::Result<Self> {
        let set = watched();
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)?;
        Ok(Self { fd })
    }

    /// Waits until `child` ends, forwarding signals to it. With `reap_all`
    /// (PID 1) every other child that ends is reaped too.
    pub fn wait(&mut self, child: i32, reap_all: bool) -> io::Result<Exit> {
        let child = Pid::from_raw(child);
        loop {
            if let Some(exit) = reap(child, reap_all)? {
                return Ok(exit);
            }
            let Some(info) = self.fd.read_signal()? else {
                continue;
            };
            forward(child, info.ssi_signo as i32);
        }
    }

    /// Hands the signalfd over, non-blocking, for an event loop.
    pub fn into_signal_fd(self) -> io::Result<SignalFd> {
        rustix::fs::fcntl_setfl(&self.fd, rustix::fs::OFlags::NONBLOCK)?;
        Ok(self.fd)
    }
}

/// Passes signal `signo` on to `child` (SIGCHLD is not forwarded).
pub fn forward(child: Pid, signo: i32) {
    if signo == Signal::SIGCHLD as i32 {
        return;
    }
    if let Ok(sig) = Signal::try_from(signo) {
        // The child may be gone already; that is fine.
        let _ = kill(child, sig);
    }
}

/// Collects every exited child without blocking; returns `child`'s exit if
/// it was among them.
pub fn reap(child: Pid, reap_all: bool) -> io::Result<Option<Exit>> {
    let target = if reap_all { None } else { Some(child) };
    loop {
        match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return Ok(Some(Exit::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                return Ok(Some(Exit::Signal(sig as i32)))
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue, // another child (an orphan PID 1 inherited)
            Err(nix::errno::Errno::ECHILD) => {
                return Err(io::Error::other(
                    "the supervised child vanished without an exit status",
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Empties the signal mask (for a child about to exec the app).
/// Async-signal-safe.
pub fn unblock_all_signals() {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}
