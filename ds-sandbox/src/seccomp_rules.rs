//! The seccomp policy as data: which calls (and arguments) are refused,
//! with which errno, and which refusals are counted. One table drives the
//! filter, compiled to BPF at build time by `build.rs` (which includes this
//! file), and the agent's accounting of what the filter refused.
//!
//! Only libc is used here, so that the build script can include it.

use libc::{EAFNOSUPPORT, ENOSYS, EPERM};

/// Calls denied outright with EPERM: mounting and namespaces, tracing and
/// other processes' memory, keyrings, bpf, perf, userfaultfd, modules,
/// kexec, reboot, swap, clocks, host names, accounting, the kernel log,
/// file handles, and assorted legacy calls.
const DENY_EPERM: &[(&str, libc::c_long)] = &[
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("statmount", 457),
    ("listmount", 458),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("process_madvise", libc::SYS_process_madvise),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("kcmp", libc::SYS_kcmp),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("keyctl", libc::SYS_keyctl),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
    ("acct", libc::SYS_acct),
    ("syslog", libc::SYS_syslog),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("vhangup", libc::SYS_vhangup),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("uselib", libc::SYS_uselib),
    ("ustat", libc::SYS_ustat),
    ("sysfs", libc::SYS_sysfs),
    ("_sysctl", libc::SYS__sysctl),
    ("move_pages", libc::SYS_move_pages),
    ("migrate_pages", libc::SYS_migrate_pages),
];

/// Calls denied with ENOSYS because libraries fall back when they are
/// "not implemented": glibc retries `clone3` as `clone` (whose flags we can
/// inspect), and io_uring users fall back to plain system calls.
const DENY_ENOSYS: &[(&str, libc::c_long)] = &[
    ("clone3", libc::SYS_clone3),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
];

/// `clone` flags that create namespaces.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

/// Terminal ioctls that inject input or reach the console. The kernel
/// takes the request as 32 bits, so only the low 32 are compared: a value
/// with high bits set is still TIOCSTI to the kernel.
const DENY_IOCTLS: &[u64] = &[libc::TIOCSTI, libc::TIOCLINUX];

/// personality() bits that may be set: PER_LINUX32 (0x8) and UNAME26
/// (0x20000). Everything else (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE,
/// MMAP_PAGE_ZERO, other personas, ...) is refused; that includes the
/// 0xffffffff query, which libseccomp cannot tell apart from "all bits"
/// without comparing the argument twice in one rule.
const PERSONALITY_ALLOWED_BITS: u64 = 0x8 | 0x20000;

/// A condition on one argument of a denied call (libseccomp compares all
/// 64 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// Any arguments.
    Always,
    /// `args[arg] & mask == value`.
    MaskedEq {
        /// Argument index.
        arg: u8,
        /// Mask applied first.
        mask: u64,
        /// Expected value.
        value: u64,
    },
    /// `args[arg] == value`.
    Eq {
        /// Argument index.
        arg: u8,
        /// Expected value.
        value: u64,
    },
    /// `args[arg] > value`.
    Greater {
        /// Argument index.
        arg: u8,
        /// Bound.
        value: u64,
    },
}

impl Cond {
    /// Whether `args` satisfy the condition.
    pub fn matches(self, args: &[u64; 6]) -> bool {
        match self {
            Cond::Always => true,
            Cond::MaskedEq { arg, mask, value } => args[usize::from(arg)] & mask == value,
            Cond::Eq { arg, value } => args[usize::from(arg)] == value,
            Cond::Greater { arg, value } => args[usize::from(arg)] > value,
        }
    }
}

/// One denial: the call, the condition on its arguments, the errno the
/// caller gets, and whether it is an attempt worth counting (a library's
/// routine probe, like glibc trying `clone3` on every new thread, is not).
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The call's name, for reports.
    pub name: &'static str,
    /// Its x86-64 number.
    pub nr: libc::c_long,
    /// When it is denied.
    pub cond: Cond,
    /// The errno returned.
    pub errno: i32,
    /// Counted (and reported) through the agent's listener.
    pub counted: bool,
}

/// Every denial, in one table that drives both the filter and the agent's
/// accounting of what the filter refused.
pub fn rules() -> &'static [Rule] {
    static RULES: std::sync::OnceLock<Vec<Rule>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        let rule = |name, nr, cond, errno| Rule {
            name,
            nr,
            cond,
            errno,
            counted: true,
        };
        let mut rules = Vec::new();
        for &(name, nr) in DENY_EPERM {
            rules.push(rule(name, nr, Cond::Always, EPERM));
        }
        for &(name, nr) in DENY_ENOSYS {
            rules.push(Rule {
                counted: nr != libc::SYS_clone3,
                ..rule(name, nr, Cond::Always, ENOSYS)
            });
        }
        for &flag in CLONE_NAMESPACE_FLAGS {
            let cond = Cond::MaskedEq {
                arg: 0,
                mask: flag,
                value: flag,
            };
            rules.push(rule(
                "clone (namespace flags)",
                libc::SYS_clone,
                cond,
                EPERM,
            ));
        }
        for &request in DENY_IOCTLS {
            let cond = Cond::MaskedEq {
                arg: 1,
                mask: 0xffff_ffff,
                value: request,
            };
            rules.push(rule("ioctl (terminal)", libc::SYS_ioctl, cond, EPERM));
        }
        socket_family_rules(&mut rules);
        personality_rules(&mut rules);
        rules
    })
}

/// The rule that denied call `nr` with `args`, as the filter decided it
/// (the first matching rule: the filter gives each call one action).
pub fn denial(nr: i32, args: &[u64; 6]) -> Option<(usize, &'static Rule)> {
    rules()
        .iter()
        .enumerate()
        .find(|(_, r)| r.nr == libc::c_long::from(nr) && r.cond.matches(args))
}

/// Only AF_UNIX (1), AF_INET (2) and AF_INET6 (10) sockets: no packet,
/// netlink, vsock, alg, bluetooth, ... The whole 64-bit argument is
/// compared, so high garbage bits are refused too.
fn socket_family_rules(rules: &mut Vec<Rule>) {
    let mut conds = vec![
        Cond::Eq { arg: 0, value: 0 },
        Cond::Greater { arg: 0, value: 10 },
    ];
    conds.extend((3..=9).map(|family| Cond::Eq {
        arg: 0,
        value: family,
    }));
    for cond in conds {
        rules.push(Rule {
            name: "socket (family)",
            nr: libc::SYS_socket,
            cond,
            errno: EAFNOSUPPORT,
            counted: true,
        });
    }
}

/// Denies every personality value with a bit outside
/// [`PERSONALITY_ALLOWED_BITS`] (one rule per bit: libseccomp compares an
/// argument only once per rule).
fn personality_rules(rules: &mut Vec<Rule>) {
    let bits = (0..32)
        .map(|b| 1u64 << b)
        .filter(|b| b & PERSONALITY_ALLOWED_BITS == 0)
        .map(|bit| Cond::MaskedEq {
            arg: 0,
            mask: bit,
            value: bit,
        });
    for cond in bits.chain([Cond::Greater {
        arg: 0,
        value: 0xffff_ffff,
    }]) {
        rules.push(Rule {
            name: "personality",
            nr: libc::SYS_personality,
            cond,
            errno: EPERM,
            counted: true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting_finds_the_rule_the_filter_applied() {
        let args = |a0: u64, a1: u64| [a0, a1, 0, 0, 0, 0];
        let nr = |n: libc::c_long| n as i32;
        let errno_of = |n, a| denial(nr(n), &a).map(|(_, r)| r.errno);
        assert_eq!(errno_of(libc::SYS_mount, args(0, 0)), Some(EPERM));
        assert_eq!(errno_of(libc::SYS_io_uring_setup, args(0, 0)), Some(ENOSYS));
        let newuser = libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64;
        assert_eq!(errno_of(libc::SYS_clone, args(newuser, 0)), Some(EPERM));
        assert_eq!(
            errno_of(libc::SYS_clone, args(libc::SIGCHLD as u64, 0)),
            None
        );
        let high_tiocsti = libc::TIOCSTI | 0xdead_0000_0000;
        assert_eq!(
            errno_of(libc::SYS_ioctl, args(0, high_tiocsti)),
            Some(EPERM)
        );
        assert_eq!(errno_of(libc::SYS_ioctl, args(0, libc::TCGETS)), None);
        assert_eq!(errno_of(libc::SYS_socket, args(16, 0)), Some(EAFNOSUPPORT));
        assert_eq!(
            errno_of(libc::SYS_socket, args(1 << 40 | 2, 0)),
            Some(EAFNOSUPPORT)
        );
        assert_eq!(errno_of(libc::SYS_socket, args(2, 0)), None);
        assert_eq!(
            errno_of(libc::SYS_personality, args(0x0040_0000, 0)),
            Some(EPERM)
        );
        assert_eq!(errno_of(libc::SYS_personality, args(0x8, 0)), None);
        assert_eq!(errno_of(libc::SYS_read, args(0, 0)), None);
    }

    #[test]
    fn only_routine_fallbacks_go_uncounted() {
        let uncounted: Vec<&str> = rules()
            .iter()
            .filter(|r| !r.counted)
            .map(|r| r.name)
            .collect();
        assert_eq!(uncounted, ["clone3"]);
    }

    #[test]
    fn one_errno_per_call() {
        // The filter gives each call one action; the accounting must agree.
        for a in rules() {
            for b in rules().iter().filter(|b| b.nr == a.nr) {
                assert_eq!((a.errno, a.counted), (b.errno, b.counted), "{}", a.name);
            }
        }
    }
}
