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

/// Calls the agent performs itself on every kernel: `listen`, which on an
/// unbound socket binds a port of the kernel's choosing, and which no
/// Landlock ABI (up to 7) checks. See [`crate::net_mediation`].
pub const MEDIATED: &[(&str, libc::c_long)] = &[("listen", libc::SYS_listen)];

/// Calls the agent performs itself when the kernel's Landlock has no TCP
/// rules (ABI < 4, Debian 12's 6.1): `bind`, so that the app binds only
/// `$PORT`.
pub const MEDIATED_WITHOUT_TCP_RULES: &[(&str, libc::c_long)] = &[("bind", libc::SYS_bind)];

/// Signal calls whose first argument is a pid (or thread group id):
/// aimed at 1, the agent, they are refused. Landlock's signal scope
/// (ABI 6) refuses them too, but older kernels only drop the signals init
/// has no handler for, and the agent handles the ones it forwards.
const SIGNALS_BY_PID: &[(&str, libc::c_long)] = &[
    ("kill", libc::SYS_kill),
    ("tkill", libc::SYS_tkill),
    ("tgkill", libc::SYS_tgkill),
    ("rt_sigqueueinfo", libc::SYS_rt_sigqueueinfo),
    ("rt_tgsigqueueinfo", libc::SYS_rt_tgsigqueueinfo),
    ("pidfd_open", libc::SYS_pidfd_open),
];

/// Denied calls the seccomp listener thread itself needs to mediate
/// binds: taking the app's socket and reading the app's address. Its own
/// filter leaves them out (and has no notifications: it would be waiting
/// for itself).
pub const LISTENER_NEEDS: &[libc::c_long] = &[libc::SYS_pidfd_getfd, libc::SYS_process_vm_readv];

/// Every call a program in the sandbox may make at all: what glibc, musl,
/// Rust's std, Go and Deno/V8 use (Docker's default profile is the model),
/// as of Linux 6.1, the kernel the policy was written for. The filter
/// gives every other call up to [`HIGHEST_CLOSED_NR`] ENOSYS (so that
/// libraries fall back, as they do on an older kernel): a call a newer
/// kernel adds is closed until the policy lists it. The calls [`rules`]
/// and the mediation name are left to their rules ([`known`]).
const ALLOWED: &[(&str, libc::c_long)] = &[
    ("accept", libc::SYS_accept),
    ("accept4", libc::SYS_accept4),
    ("access", libc::SYS_access),
    ("alarm", libc::SYS_alarm),
    ("arch_prctl", libc::SYS_arch_prctl),
    ("bind", libc::SYS_bind),
    ("brk", libc::SYS_brk),
    ("capget", libc::SYS_capget),
    ("capset", libc::SYS_capset),
    ("chdir", libc::SYS_chdir),
    ("chmod", libc::SYS_chmod),
    ("chown", libc::SYS_chown),
    ("clock_getres", libc::SYS_clock_getres),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("clone", libc::SYS_clone),
    ("close", libc::SYS_close),
    ("close_range", libc::SYS_close_range),
    ("connect", libc::SYS_connect),
    ("copy_file_range", libc::SYS_copy_file_range),
    ("creat", libc::SYS_creat),
    ("dup", libc::SYS_dup),
    ("dup2", libc::SYS_dup2),
    ("dup3", libc::SYS_dup3),
    ("epoll_create", libc::SYS_epoll_create),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("epoll_ctl_old", libc::SYS_epoll_ctl_old),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    ("epoll_pwait2", libc::SYS_epoll_pwait2),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("epoll_wait_old", libc::SYS_epoll_wait_old),
    ("eventfd", libc::SYS_eventfd),
    ("eventfd2", libc::SYS_eventfd2),
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    ("faccessat", libc::SYS_faccessat),
    ("faccessat2", libc::SYS_faccessat2),
    ("fadvise64", libc::SYS_fadvise64),
    ("fallocate", libc::SYS_fallocate),
    ("fanotify_mark", libc::SYS_fanotify_mark),
    ("fchdir", libc::SYS_fchdir),
    ("fchmod", libc::SYS_fchmod),
    ("fchmodat", libc::SYS_fchmodat),
    ("fchown", libc::SYS_fchown),
    ("fchownat", libc::SYS_fchownat),
    ("fcntl", libc::SYS_fcntl),
    ("fdatasync", libc::SYS_fdatasync),
    ("fgetxattr", libc::SYS_fgetxattr),
    ("flistxattr", libc::SYS_flistxattr),
    ("flock", libc::SYS_flock),
    ("fork", libc::SYS_fork),
    ("fremovexattr", libc::SYS_fremovexattr),
    ("fsetxattr", libc::SYS_fsetxattr),
    ("fstat", libc::SYS_fstat),
    ("fstatfs", libc::SYS_fstatfs),
    ("fsync", libc::SYS_fsync),
    ("ftruncate", libc::SYS_ftruncate),
    ("futex", libc::SYS_futex),
    ("futex_waitv", libc::SYS_futex_waitv),
    ("futimesat", libc::SYS_futimesat),
    ("get_robust_list", libc::SYS_get_robust_list),
    ("get_thread_area", libc::SYS_get_thread_area),
    ("getcpu", libc::SYS_getcpu),
    ("getcwd", libc::SYS_getcwd),
    ("getdents", libc::SYS_getdents),
    ("getdents64", libc::SYS_getdents64),
    ("getegid", libc::SYS_getegid),
    ("geteuid", libc::SYS_geteuid),
    ("getgid", libc::SYS_getgid),
    ("getgroups", libc::SYS_getgroups),
    ("getitimer", libc::SYS_getitimer),
    ("getpeername", libc::SYS_getpeername),
    ("getpgid", libc::SYS_getpgid),
    ("getpgrp", libc::SYS_getpgrp),
    ("getpid", libc::SYS_getpid),
    ("getppid", libc::SYS_getppid),
    ("getpriority", libc::SYS_getpriority),
    ("getrandom", libc::SYS_getrandom),
    ("getresgid", libc::SYS_getresgid),
    ("getresuid", libc::SYS_getresuid),
    ("getrlimit", libc::SYS_getrlimit),
    ("getrusage", libc::SYS_getrusage),
    ("getsid", libc::SYS_getsid),
    ("getsockname", libc::SYS_getsockname),
    ("getsockopt", libc::SYS_getsockopt),
    ("gettid", libc::SYS_gettid),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("getuid", libc::SYS_getuid),
    ("getxattr", libc::SYS_getxattr),
    ("inotify_add_watch", libc::SYS_inotify_add_watch),
    ("inotify_init", libc::SYS_inotify_init),
    ("inotify_init1", libc::SYS_inotify_init1),
    ("inotify_rm_watch", libc::SYS_inotify_rm_watch),
    ("io_cancel", libc::SYS_io_cancel),
    ("io_destroy", libc::SYS_io_destroy),
    ("io_getevents", libc::SYS_io_getevents),
    ("io_pgetevents", 333),
    ("io_setup", libc::SYS_io_setup),
    ("io_submit", libc::SYS_io_submit),
    ("ioctl", libc::SYS_ioctl),
    ("ioprio_get", libc::SYS_ioprio_get),
    ("ioprio_set", libc::SYS_ioprio_set),
    ("kill", libc::SYS_kill),
    ("landlock_add_rule", libc::SYS_landlock_add_rule),
    ("landlock_create_ruleset", libc::SYS_landlock_create_ruleset),
    ("landlock_restrict_self", libc::SYS_landlock_restrict_self),
    ("lchown", libc::SYS_lchown),
    ("lgetxattr", libc::SYS_lgetxattr),
    ("link", libc::SYS_link),
    ("linkat", libc::SYS_linkat),
    ("listen", libc::SYS_listen),
    ("listxattr", libc::SYS_listxattr),
    ("llistxattr", libc::SYS_llistxattr),
    ("lremovexattr", libc::SYS_lremovexattr),
    ("lseek", libc::SYS_lseek),
    ("lsetxattr", libc::SYS_lsetxattr),
    ("lstat", libc::SYS_lstat),
    ("madvise", libc::SYS_madvise),
    ("membarrier", libc::SYS_membarrier),
    ("memfd_create", libc::SYS_memfd_create),
    ("memfd_secret", libc::SYS_memfd_secret),
    ("mincore", libc::SYS_mincore),
    ("mkdir", libc::SYS_mkdir),
    ("mkdirat", libc::SYS_mkdirat),
    ("mknod", libc::SYS_mknod),
    ("mknodat", libc::SYS_mknodat),
    ("mlock", libc::SYS_mlock),
    ("mlock2", libc::SYS_mlock2),
    ("mlockall", libc::SYS_mlockall),
    ("mmap", libc::SYS_mmap),
    ("modify_ldt", libc::SYS_modify_ldt),
    ("mprotect", libc::SYS_mprotect),
    ("mq_getsetattr", libc::SYS_mq_getsetattr),
    ("mq_notify", libc::SYS_mq_notify),
    ("mq_open", libc::SYS_mq_open),
    ("mq_timedreceive", libc::SYS_mq_timedreceive),
    ("mq_timedsend", libc::SYS_mq_timedsend),
    ("mq_unlink", libc::SYS_mq_unlink),
    ("mremap", libc::SYS_mremap),
    ("msgctl", libc::SYS_msgctl),
    ("msgget", libc::SYS_msgget),
    ("msgrcv", libc::SYS_msgrcv),
    ("msgsnd", libc::SYS_msgsnd),
    ("msync", libc::SYS_msync),
    ("munlock", libc::SYS_munlock),
    ("munlockall", libc::SYS_munlockall),
    ("munmap", libc::SYS_munmap),
    ("nanosleep", libc::SYS_nanosleep),
    ("newfstatat", libc::SYS_newfstatat),
    ("open", libc::SYS_open),
    ("openat", libc::SYS_openat),
    ("openat2", libc::SYS_openat2),
    ("pause", libc::SYS_pause),
    ("pidfd_open", libc::SYS_pidfd_open),
    ("pidfd_send_signal", libc::SYS_pidfd_send_signal),
    ("pipe", libc::SYS_pipe),
    ("pipe2", libc::SYS_pipe2),
    ("pkey_alloc", libc::SYS_pkey_alloc),
    ("pkey_free", libc::SYS_pkey_free),
    ("pkey_mprotect", libc::SYS_pkey_mprotect),
    ("poll", libc::SYS_poll),
    ("ppoll", libc::SYS_ppoll),
    ("prctl", libc::SYS_prctl),
    ("pread64", libc::SYS_pread64),
    ("preadv", libc::SYS_preadv),
    ("preadv2", libc::SYS_preadv2),
    ("prlimit64", libc::SYS_prlimit64),
    ("process_mrelease", libc::SYS_process_mrelease),
    ("pselect6", libc::SYS_pselect6),
    ("pwrite64", libc::SYS_pwrite64),
    ("pwritev", libc::SYS_pwritev),
    ("pwritev2", libc::SYS_pwritev2),
    ("read", libc::SYS_read),
    ("readahead", libc::SYS_readahead),
    ("readlink", libc::SYS_readlink),
    ("readlinkat", libc::SYS_readlinkat),
    ("readv", libc::SYS_readv),
    ("recvfrom", libc::SYS_recvfrom),
    ("recvmmsg", libc::SYS_recvmmsg),
    ("recvmsg", libc::SYS_recvmsg),
    ("remap_file_pages", libc::SYS_remap_file_pages),
    ("removexattr", libc::SYS_removexattr),
    ("rename", libc::SYS_rename),
    ("renameat", libc::SYS_renameat),
    ("renameat2", libc::SYS_renameat2),
    ("restart_syscall", libc::SYS_restart_syscall),
    ("rmdir", libc::SYS_rmdir),
    ("rseq", libc::SYS_rseq),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("rt_sigpending", libc::SYS_rt_sigpending),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigqueueinfo", libc::SYS_rt_sigqueueinfo),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("rt_sigsuspend", libc::SYS_rt_sigsuspend),
    ("rt_sigtimedwait", libc::SYS_rt_sigtimedwait),
    ("rt_tgsigqueueinfo", libc::SYS_rt_tgsigqueueinfo),
    ("sched_get_priority_max", libc::SYS_sched_get_priority_max),
    ("sched_get_priority_min", libc::SYS_sched_get_priority_min),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("sched_getattr", libc::SYS_sched_getattr),
    ("sched_getparam", libc::SYS_sched_getparam),
    ("sched_getscheduler", libc::SYS_sched_getscheduler),
    ("sched_rr_get_interval", libc::SYS_sched_rr_get_interval),
    ("sched_setaffinity", libc::SYS_sched_setaffinity),
    ("sched_setattr", libc::SYS_sched_setattr),
    ("sched_setparam", libc::SYS_sched_setparam),
    ("sched_setscheduler", libc::SYS_sched_setscheduler),
    ("sched_yield", libc::SYS_sched_yield),
    ("seccomp", libc::SYS_seccomp),
    ("select", libc::SYS_select),
    ("semctl", libc::SYS_semctl),
    ("semget", libc::SYS_semget),
    ("semop", libc::SYS_semop),
    ("semtimedop", libc::SYS_semtimedop),
    ("sendfile", libc::SYS_sendfile),
    ("sendmmsg", libc::SYS_sendmmsg),
    ("sendmsg", libc::SYS_sendmsg),
    ("sendto", libc::SYS_sendto),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("set_thread_area", libc::SYS_set_thread_area),
    ("set_tid_address", libc::SYS_set_tid_address),
    ("setfsgid", libc::SYS_setfsgid),
    ("setfsuid", libc::SYS_setfsuid),
    ("setgid", libc::SYS_setgid),
    ("setgroups", libc::SYS_setgroups),
    ("setitimer", libc::SYS_setitimer),
    ("setpgid", libc::SYS_setpgid),
    ("setpriority", libc::SYS_setpriority),
    ("setregid", libc::SYS_setregid),
    ("setresgid", libc::SYS_setresgid),
    ("setresuid", libc::SYS_setresuid),
    ("setreuid", libc::SYS_setreuid),
    ("setrlimit", libc::SYS_setrlimit),
    ("setsid", libc::SYS_setsid),
    ("setsockopt", libc::SYS_setsockopt),
    ("setuid", libc::SYS_setuid),
    ("setxattr", libc::SYS_setxattr),
    ("shmat", libc::SYS_shmat),
    ("shmctl", libc::SYS_shmctl),
    ("shmdt", libc::SYS_shmdt),
    ("shmget", libc::SYS_shmget),
    ("shutdown", libc::SYS_shutdown),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("signalfd", libc::SYS_signalfd),
    ("signalfd4", libc::SYS_signalfd4),
    ("socket", libc::SYS_socket),
    ("socketpair", libc::SYS_socketpair),
    ("splice", libc::SYS_splice),
    ("stat", libc::SYS_stat),
    ("statfs", libc::SYS_statfs),
    ("statx", libc::SYS_statx),
    ("symlink", libc::SYS_symlink),
    ("symlinkat", libc::SYS_symlinkat),
    ("sync", libc::SYS_sync),
    ("sync_file_range", libc::SYS_sync_file_range),
    ("syncfs", libc::SYS_syncfs),
    ("sysinfo", libc::SYS_sysinfo),
    ("tee", libc::SYS_tee),
    ("tgkill", libc::SYS_tgkill),
    ("time", libc::SYS_time),
    ("timer_create", libc::SYS_timer_create),
    ("timer_delete", libc::SYS_timer_delete),
    ("timer_getoverrun", libc::SYS_timer_getoverrun),
    ("timer_gettime", libc::SYS_timer_gettime),
    ("timer_settime", libc::SYS_timer_settime),
    ("timerfd_create", libc::SYS_timerfd_create),
    ("timerfd_gettime", libc::SYS_timerfd_gettime),
    ("timerfd_settime", libc::SYS_timerfd_settime),
    ("times", libc::SYS_times),
    ("tkill", libc::SYS_tkill),
    ("truncate", libc::SYS_truncate),
    ("umask", libc::SYS_umask),
    ("uname", libc::SYS_uname),
    ("unlink", libc::SYS_unlink),
    ("unlinkat", libc::SYS_unlinkat),
    ("utime", libc::SYS_utime),
    ("utimensat", libc::SYS_utimensat),
    ("utimes", libc::SYS_utimes),
    ("vfork", libc::SYS_vfork),
    ("vmsplice", libc::SYS_vmsplice),
    ("wait4", libc::SYS_wait4),
    ("waitid", libc::SYS_waitid),
    ("write", libc::SYS_write),
    ("writev", libc::SYS_writev),
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
        for &(_, nr) in SIGNALS_BY_PID {
            // The kernel reads a pid as an int: compare the low 32 bits.
            let cond = Cond::MaskedEq {
                arg: 0,
                mask: 0xffff_ffff,
                value: 1,
            };
            rules.push(rule("signal to the agent", nr, cond, EPERM));
        }
        socket_family_rules(&mut rules);
        personality_rules(&mut rules);
        rules
    })
}

/// Numbers up to this one that [`known`] does not list get ENOSYS from the
/// filter. x86-64's table ends well below it (Linux 6.18: 470; about ten
/// calls are added a year); above it the kernel has no call, and answers
/// ENOSYS itself, until some future kernel reaches it (the x32 range,
/// from bit 30, is refused with the other architectures). Each closed
/// number is one more rule: closing up to 1023 made the program twice as
/// long and every sandbox start slower.
pub const HIGHEST_CLOSED_NR: libc::c_long = 599;
// Room above the newest call (6.18: 470) for the years to come.
const _: () = assert!(HIGHEST_CLOSED_NR >= 470 + 100);

/// Every call number the filter leaves to the policy's rules (allowed
/// unless a rule refuses it): [`ALLOWED`], and every call a rule or the
/// mediation names.
pub fn known() -> Vec<libc::c_long> {
    let mut nrs: Vec<libc::c_long> = ALLOWED
        .iter()
        .chain(MEDIATED)
        .chain(MEDIATED_WITHOUT_TCP_RULES)
        .map(|&(_, nr)| nr)
        .chain(rules().iter().map(|r| r.nr))
        .collect();
    nrs.sort_unstable();
    nrs.dedup();
    nrs
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
        assert_eq!(errno_of(libc::SYS_kill, args(1, 9)), Some(EPERM));
        assert_eq!(errno_of(libc::SYS_kill, args(1 << 32 | 1, 9)), Some(EPERM));
        assert_eq!(errno_of(libc::SYS_kill, args(2, 9)), None);
        assert_eq!(errno_of(libc::SYS_tgkill, args(1, 2)), Some(EPERM));
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
    fn unknown_calls_are_closed_and_known_ones_open() {
        let known = known();
        for nr in [
            libc::SYS_read,
            libc::SYS_mount,
            libc::SYS_clone3,
            libc::SYS_bind,
        ] {
            assert!(known.contains(&nr), "{nr}");
        }
        // Newer than the policy: cachestat (6.5), fchmodat2 (6.6),
        // map_shadow_stack, futex_wake (6.7), mseal (6.10).
        for nr in [451, 452, 453, 454, 462] {
            assert!(!known.contains(&nr), "{nr}");
        }
        // Never compared to a name twice.
        let mut names: Vec<&str> = ALLOWED.iter().map(|&(n, _)| n).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
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
