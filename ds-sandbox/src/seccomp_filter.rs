//! The system-call filter (libseccomp). The architecture is checked first:
//! anything but native x86-64 (i386 via `int 0x80`, x32) kills the process.
//! Then a deny list: calls and arguments that reach kernel surface an app
//! never needs. Denials return an errno chosen so that normal programs
//! (glibc, Rust std, Go, Deno/V8) fall back or fail cleanly.

use libc::{EAFNOSUPPORT, ENOSYS, EPERM};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

/// Errors building or loading the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// libseccomp refused a rule or the load.
    #[error("seccomp: {what}: {source}")]
    Lib {
        /// What we were doing.
        what: String,
        /// libseccomp's error.
        source: libseccomp::error::SeccompError,
    },
}

fn lib<T>(
    what: impl Into<String>,
    r: Result<T, libseccomp::error::SeccompError>,
) -> Result<T, SeccompError> {
    r.map_err(|source| SeccompError::Lib {
        what: what.into(),
        source,
    })
}

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

/// Builds the filter. It is loaded by the agent once setup is done; the
/// app inherits it across fork and exec.
pub fn build() -> Result<ScmpFilterContext, SeccompError> {
    let mut f = lib(
        "creating the filter",
        ScmpFilterContext::new(ScmpAction::Allow),
    )?;
    // Only native x86-64; i386 (`int 0x80`) and x32 calls hit the
    // bad-architecture action.
    lib(
        "setting the bad-arch action",
        f.set_act_badarch(ScmpAction::KillProcess),
    )?;
    lib(
        "checking the native arch",
        f.is_arch_present(ScmpArch::Native),
    )
    .and_then(|present| {
        if present {
            Ok(())
        } else {
            lib(
                "adding the native arch",
                f.add_arch(ScmpArch::Native).map(|_| ()),
            )
        }
    })?;
    // no_new_privs is set by the caps step already; keep libseccomp from
    // needing CAP_SYS_ADMIN either way.
    lib("setting no_new_privs", f.set_ctl_nnp(true))?;

    for &(name, nr) in DENY_EPERM {
        lib(
            format!("denying {name}"),
            f.add_rule(ScmpAction::Errno(EPERM), ScmpSyscall::from(nr as i32)),
        )?;
    }
    for &(name, nr) in DENY_ENOSYS {
        lib(
            format!("denying {name}"),
            f.add_rule(ScmpAction::Errno(ENOSYS), ScmpSyscall::from(nr as i32)),
        )?;
    }
    let clone = ScmpSyscall::from(libc::SYS_clone as i32);
    for &flag in CLONE_NAMESPACE_FLAGS {
        let cmp = ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(flag), flag);
        lib(
            "denying clone with namespace flags",
            f.add_rule_conditional(ScmpAction::Errno(EPERM), clone, &[cmp]),
        )?;
    }
    let ioctl = ScmpSyscall::from(libc::SYS_ioctl as i32);
    for &request in DENY_IOCTLS {
        let cmp = ScmpArgCompare::new(1, ScmpCompareOp::MaskedEqual(0xffff_ffff), request);
        lib(
            "denying a terminal ioctl",
            f.add_rule_conditional(ScmpAction::Errno(EPERM), ioctl, &[cmp]),
        )?;
    }
    deny_socket_families(&mut f)?;
    deny_personalities(&mut f)?;
    Ok(f)
}

/// Only AF_UNIX (1), AF_INET (2) and AF_INET6 (10) sockets: no packet,
/// netlink, vsock, alg, bluetooth, ... The whole 64-bit argument is
/// compared, so high garbage bits are refused too.
fn deny_socket_families(f: &mut ScmpFilterContext) -> Result<(), SeccompError> {
    let socket = ScmpSyscall::from(libc::SYS_socket as i32);
    let deny = ScmpAction::Errno(EAFNOSUPPORT);
    let mut rules = vec![
        ScmpArgCompare::new(0, ScmpCompareOp::Equal, 0),
        ScmpArgCompare::new(0, ScmpCompareOp::Greater, 10),
    ];
    rules.extend((3..=9).map(|family| ScmpArgCompare::new(0, ScmpCompareOp::Equal, family)));
    for cmp in rules {
        lib(
            "denying socket families",
            f.add_rule_conditional(deny, socket, &[cmp]),
        )?;
    }
    Ok(())
}

/// Denies every personality value with a bit outside
/// [`PERSONALITY_ALLOWED_BITS`] (one rule per bit: libseccomp compares an
/// argument only once per rule).
fn deny_personalities(f: &mut ScmpFilterContext) -> Result<(), SeccompError> {
    let personality = ScmpSyscall::from(libc::SYS_personality as i32);
    let deny = ScmpAction::Errno(EPERM);
    for bit in (0..32)
        .map(|b| 1u64 << b)
        .filter(|b| b & PERSONALITY_ALLOWED_BITS == 0)
    {
        let cmp = ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(bit), bit);
        lib(
            "denying personality values",
            f.add_rule_conditional(deny, personality, &[cmp]),
        )?;
    }
    let above = ScmpArgCompare::new(0, ScmpCompareOp::Greater, 0xffff_ffff);
    lib(
        "denying personality values",
        f.add_rule_conditional(deny, personality, &[above]),
    )?;
    Ok(())
}

/// Loads `filter` on the calling process (inherited by its children).
pub fn load(filter: &ScmpFilterContext) -> Result<(), SeccompError> {
    lib("loading the filter", filter.load())
}

#[cfg(test)]
mod tests {
    #[test]
    fn filter_builds() {
        super::build().expect("every rule is accepted by libseccomp");
    }
}
