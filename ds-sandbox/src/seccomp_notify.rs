//! Counting what the seccomp filter refuses. A plain errno action leaves no
//! trace, so counted denials use `SECCOMP_RET_USER_NOTIF` instead: the
//! kernel holds the calling thread and hands the call to this listener, a
//! thread of the agent, which answers with the rule's errno (never lets a
//! call through) and counts it. The app cannot tell the difference, except
//! for the few microseconds of the round trip, and only on calls it is
//! refused anyway.
//!
//! One filter carries both the errno rules and the notify rules on purpose:
//! across stacked filters an errno outranks a notification, so an app-only
//! notifying filter under the agent's errno filter would never fire.

use std::fmt::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::seccomp_rules;
use crate::sys;

/// Consecutive receive errors after which the listener gives up (the
/// descriptor is broken; pending callers then get ENOSYS from the kernel).
const MAX_CONSECUTIVE_ERRORS: u32 = 1000;

/// The denial counts, shared with the listener thread.
#[derive(Debug, Clone)]
pub struct Denials {
    /// One counter per rule of [`seccomp_rules::rules`].
    per_rule: Arc<[AtomicU64]>,
}

impl Denials {
    /// Starts the listener thread on `listener` (the filter's notification
    /// descriptor). With `log_first`, the first denial of each call is
    /// written to stderr (the appspace's log); later ones are only counted.
    /// Must run after the filter is loaded: the thread inherits it, and its
    /// creation's `clone3` is refused with a plain errno, never notified.
    pub fn listen(listener: OwnedFd, log_first: bool) -> std::io::Result<Self> {
        let per_rule: Arc<[AtomicU64]> = seccomp_rules::rules()
            .iter()
            .map(|_| AtomicU64::new(0))
            .collect();
        let counts = per_rule.clone();
        std::thread::Builder::new()
            .name("seccomp-listener".into())
            .stack_size(128 * 1024)
            .spawn(move || answer_forever(&listener, &counts, log_first))?;
        Ok(Self { per_rule })
    }

    /// Denied calls so far.
    pub fn total(&self) -> u64 {
        self.per_rule
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// "N denied calls (mount 2, ptrace 1)", by call name.
    pub fn summary(&self) -> String {
        let mut by_name: Vec<(&str, u64)> = Vec::new();
        for (rule, count) in seccomp_rules::rules().iter().zip(self.per_rule.iter()) {
            let n = count.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            match by_name.iter_mut().find(|(name, _)| *name == rule.name) {
                Some((_, total)) => *total += n,
                None => by_name.push((rule.name, n)),
            }
        }
        let mut text = format!("{} denied calls", self.total());
        if !by_name.is_empty() {
            let list: Vec<String> = by_name.iter().map(|(n, c)| format!("{n} {c}")).collect();
            let _ = write!(text, " ({})", list.join(", "));
        }
        text
    }
}

fn answer_forever(listener: &OwnedFd, counts: &[AtomicU64], log_first: bool) {
    let fd = listener.as_fd();
    let mut errors = 0;
    while errors < MAX_CONSECUTIVE_ERRORS {
        // Fails when the caller died meanwhile (or on EINTR); anything else
        // repeating means the descriptor is unusable.
        let Ok(req) = sys::seccomp_notif_receive(fd) else {
            errors += 1;
            continue;
        };
        errors = 0;
        let (errno, name) = match seccomp_rules::denial(req.data.nr, &req.data.args) {
            Some((index, rule)) => {
                let before = counts[index].fetch_add(1, Ordering::Relaxed);
                (rule.errno, (before == 0).then_some(rule.name))
            }
            // Unreachable while the filter and the table agree; refuse.
            None => (libc::EPERM, None),
        };
        // A caller that died meanwhile makes this fail; nothing to do then.
        let _ = sys::seccomp_notif_refuse(fd, req.id, errno);
        if let (true, Some(name)) = (log_first, name) {
            eprintln!(
                "ds-sandbox: seccomp refused {name} to pid {} ({}); further refusals are counted",
                req.pid,
                std::io::Error::from_raw_os_error(errno)
            );
        }
    }
}
