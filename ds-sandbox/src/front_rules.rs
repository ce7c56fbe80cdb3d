//! The front door's seccomp allow-list, as data (compiled to BPF at build
//! time by `build.rs`, which includes this file): the calls an
//! unprivileged network process makes in its steady state once every
//! descriptor it needs was handed to it: tokio's epoll loop, accepting and
//! moving bytes, passing descriptors over Unix sockets, memory, clocks,
//! threads. Everything else is refused with EPERM: no file is opened
//! (`open`, `openat` are absent), no socket made (`socket`), nothing
//! executed, traced, mounted or unshared. See docs/privsep.md.
//!
//! Only libc is used here, so that the build script can include it.

/// Allowed whatever their arguments.
pub const ALLOWED: &[(&str, libc::c_long)] = &[
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("readv", libc::SYS_readv),
    ("writev", libc::SYS_writev),
    ("pread64", libc::SYS_pread64),
    ("pwrite64", libc::SYS_pwrite64),
    ("close", libc::SYS_close),
    ("fstat", libc::SYS_fstat),
    ("fcntl", libc::SYS_fcntl),
    ("mmap", libc::SYS_mmap),
    ("munmap", libc::SYS_munmap),
    ("mremap", libc::SYS_mremap),
    ("mprotect", libc::SYS_mprotect),
    ("madvise", libc::SYS_madvise),
    ("brk", libc::SYS_brk),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("futex", libc::SYS_futex),
    ("sched_yield", libc::SYS_sched_yield),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("getrandom", libc::SYS_getrandom),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("nanosleep", libc::SYS_nanosleep),
    ("gettid", libc::SYS_gettid),
    ("getpid", libc::SYS_getpid),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    ("restart_syscall", libc::SYS_restart_syscall),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("rseq", libc::SYS_rseq),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    ("epoll_pwait2", libc::SYS_epoll_pwait2),
    ("eventfd2", libc::SYS_eventfd2),
    ("accept4", libc::SYS_accept4),
    ("recvfrom", libc::SYS_recvfrom),
    ("sendto", libc::SYS_sendto),
    ("recvmsg", libc::SYS_recvmsg),
    ("sendmsg", libc::SYS_sendmsg),
    ("shutdown", libc::SYS_shutdown),
    ("setsockopt", libc::SYS_setsockopt),
    ("getsockopt", libc::SYS_getsockopt),
    ("getsockname", libc::SYS_getsockname),
    ("getpeername", libc::SYS_getpeername),
];

/// `clone` only for a thread (`CLONE_THREAD` set): a new process could
/// exec nothing anyway, but neither can it be made. `clone3` gets ENOSYS
/// so that glibc falls back to `clone`, whose flags the filter can read.
pub const CLONE_THREAD: u64 = libc::CLONE_THREAD as u64;

/// `prctl` only to name a thread (`PR_SET_NAME`).
pub const PRCTL_SET_NAME: u64 = libc::PR_SET_NAME as u64;

/// `socketpair` only for `AF_UNIX`: a pair of connected sockets reaches
/// nothing outside the process (tokio's signal driver makes one when the
/// runtime starts).
pub const SOCKETPAIR_DOMAIN: u64 = libc::AF_UNIX as u64;

/// `ioctl` only to make a descriptor non-blocking or close-on-exec (the
/// sockets it was handed, as tokio needs them).
pub const IOCTLS: &[u64] = &[libc::FIONBIO, libc::FIOCLEX];

/// `seccomp` only to add a filter on every thread (phase 2 on top of
/// phase 1: a filter can only add refusals, never lift one).
pub const SECCOMP_OP: u64 = libc::SECCOMP_SET_MODE_FILTER as u64;

/// The flags of that one `seccomp` call.
pub const SECCOMP_FLAGS: u64 = libc::SECCOMP_FILTER_FLAG_TSYNC;
