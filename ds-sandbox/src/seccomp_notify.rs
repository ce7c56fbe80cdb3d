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
//!
//! The listener also performs the app's `listen` calls itself, and its
//! `bind` calls where Landlock has no TCP rules ([`crate::net_mediation`]). It runs
//! under its own filter, loaded before the sandbox's: the same refusals as
//! plain errnos, with the two calls mediation needs (`pidfd_getfd`,
//! `process_vm_readv`) left open.

use std::fmt::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use crate::net_mediation::Mediation;
use crate::seccomp_filter::{self, Program};
use crate::seccomp_rules;
use crate::sys::{self, NotifAnswer};

/// Consecutive receive errors after which the listener gives up (the
/// descriptor is broken; pending callers then get ENOSYS from the kernel).
const MAX_CONSECUTIVE_ERRORS: u32 = 1000;

/// The denial counts, shared with the listener thread.
#[derive(Debug, Clone)]
pub struct Denials {
    /// One counter per rule of [`seccomp_rules::rules`].
    per_rule: Arc<[AtomicU64]>,
    /// Binds and listens the port rule refused ([`crate::net_mediation`]).
    ports: Arc<AtomicU64>,
}

/// A listener thread started and confined, waiting for the descriptor of
/// the filter it is to answer for.
#[derive(Debug)]
pub struct Pending {
    denials: Denials,
    handover: mpsc::SyncSender<OwnedFd>,
}

impl Denials {
    /// Starts the listener thread, which first loads its own filter (no
    /// notifications: it would be waiting for itself; and the calls it
    /// needs to bind for the app left open). Runs under
    /// every other layer (the thread inherits them and the blocked signal
    /// mask, so that signals still reach the supervisor's signalfd) and
    /// before the sandbox's filter is loaded on the calling thread, which
    /// the listener thread must not inherit. With `log_first`, the first
    /// denial of each call is written to stderr (the appspace's log); later
    /// ones are only counted.
    pub fn start(mediation: Mediation, log_first: bool) -> std::io::Result<Pending> {
        let program = seccomp_filter::program(Program::Listener).map_err(std::io::Error::other)?;
        let denials = Denials {
            per_rule: seccomp_rules::rules()
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
            ports: Arc::new(AtomicU64::new(0)),
        };
        let counts = denials.clone();
        let (handover, listener_rx) = mpsc::sync_channel::<OwnedFd>(1);
        std::thread::Builder::new()
            .name("seccomp-listener".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                // Nobody waits for this (filters are per thread: the
                // caller's own load does not depend on it); a listener that
                // cannot confine itself takes the sandbox down with it.
                if let Err(e) = seccomp_filter::load_without_listener(&program) {
                    eprintln!("ds-sandbox: the seccomp listener's own filter: {e}");
                    sys::exit_now(crate::launcher::SETUP_FAILED);
                }
                if let Ok(listener) = listener_rx.recv() {
                    answer_forever(&listener, &counts, mediation, log_first);
                }
            })?;
        Ok(Pending { denials, handover })
    }

    /// Denied calls so far.
    pub fn total(&self) -> u64 {
        self.per_rule
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.ports.load(Ordering::Relaxed)
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
        let ports = self.ports.load(Ordering::Relaxed);
        if ports > 0 {
            by_name.push((PORT_RULE, ports));
        }
        let mut text = format!("{} denied calls", self.total());
        if !by_name.is_empty() {
            let list: Vec<String> = by_name.iter().map(|(n, c)| format!("{n} {c}")).collect();
            let _ = write!(text, " ({})", list.join(", "));
        }
        text
    }
}

/// How refusals of the port rule are named in reports.
const PORT_RULE: &str = "bind/listen (port)";

impl Pending {
    /// Hands the thread the listener of the filter just loaded; from now
    /// on it answers.
    pub fn answer(self, listener: OwnedFd) -> Denials {
        // The thread waits for exactly this; if it died, callers get
        // ENOSYS from the kernel once the listener closes.
        let _ = self.handover.send(listener);
        self.denials
    }
}

fn answer_forever(listener: &OwnedFd, denials: &Denials, mediation: Mediation, log_first: bool) {
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
        if let Some(decision) = mediation.answer(fd, &req) {
            let _ = sys::seccomp_notif_answer(fd, req.id, decision.answer);
            if decision.refused_by_policy {
                let before = denials.ports.fetch_add(1, Ordering::Relaxed);
                if log_first && before == 0 {
                    eprintln!(
                        "ds-sandbox: refused a bind or listen off $PORT to pid {}; further refusals are counted",
                        req.pid
                    );
                }
            }
            continue;
        }
        let (errno, name) = match seccomp_rules::denial(req.data.nr, &req.data.args) {
            Some((index, rule)) => {
                let before = denials.per_rule[index].fetch_add(1, Ordering::Relaxed);
                (rule.errno, (before == 0).then_some(rule.name))
            }
            // Unreachable while the filter and the table agree; refuse.
            None => (libc::EPERM, None),
        };
        // A caller that died meanwhile makes this fail; nothing to do then.
        let _ = sys::seccomp_notif_answer(fd, req.id, NotifAnswer::Refuse(errno));
        if let (true, Some(name)) = (log_first, name) {
            eprintln!(
                "ds-sandbox: seccomp refused {name} to pid {} ({}); further refusals are counted",
                req.pid,
                std::io::Error::from_raw_os_error(errno)
            );
        }
    }
}
