//! The only module of ds that uses `unsafe`: thin wrappers around the few
//! system calls that neither `rustix` nor `nix` expose safely (fork, exec
//! from a descriptor, raw exit, one network ioctl, seccomp and its
//! listener's ioctls, adopting inherited descriptors, the process's
//! command line, project ids and quotas).
//!
//! Everything here that runs between `fork` and `exec` is async-signal-safe:
//! plain system calls on memory prepared before the fork. The functions
//! whose safety depends on what the caller does around them (fork and
//! clone, closing or overwriting descriptor numbers, exec) are private to
//! this module: the code that runs in the forked children lives here too
//! ([`launcher_child`], [`app_child`]), and the rest of the crate gets
//! safe entry points only.
#![allow(unsafe_code)]

pub(crate) mod app_child;
pub(crate) mod launcher_child;

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// A NULL-terminated `char *[]` built before a fork, so that the child only
/// reads memory and never allocates.
#[derive(Debug)]
pub struct CArgv {
    _owned: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

impl CArgv {
    /// Builds the array; fails if a string holds a NUL byte.
    pub fn new<I, S>(items: I) -> Result<Self, std::ffi::NulError>
    where
        I: IntoIterator<Item = S>,
        S: Into<Vec<u8>>,
    {
        let owned = items
            .into_iter()
            .map(CString::new)
            .collect::<Result<Vec<_>, _>>()?;
        let mut ptrs: Vec<*const libc::c_char> = owned.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Ok(Self {
            _owned: owned,
            ptrs,
        })
    }

    fn as_ptr(&self) -> *const *const libc::c_char {
        self.ptrs.as_ptr()
    }
}

/// Which side of a fork we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forked {
    /// The new process.
    Child,
    /// The original process, with the child's pid.
    Parent(i32),
}

/// `fork(2)`.
///
/// Callers must only make async-signal-safe calls in the child before
/// `exec` or [`exit_now`]: in particular no allocation. The agent has one
/// other thread, the seccomp listener, and the allocator is mimalloc,
/// which `fork` does not make consistent for the child (glibc's `fork`
/// only does that for glibc's own malloc), so memory the child needs is
/// prepared before the fork.
fn fork() -> io::Result<Forked> {
    // SAFETY: the child only makes async-signal-safe calls on memory
    // prepared before the fork (documented above), so neither a lock
    // another thread held at the fork nor the allocator's state matters.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`: runs the program the
/// descriptor refers to, even when no path to it exists in this mount
/// namespace. Returns only on failure.
fn exec_fd(program: BorrowedFd<'_>, argv: &CArgv, envp: &CArgv) -> io::Error {
    let empty: &CStr = c"";
    // SAFETY: `argv` and `envp` are NULL-terminated arrays of valid C strings
    // that outlive the call (CArgv owns them); `empty` is a valid C string;
    // the descriptor is open (borrowed).
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            program.as_raw_fd(),
            empty.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    io::Error::last_os_error()
}

/// `execve(path, argv, envp)`. Returns only on failure.
fn exec_path(path: &CStr, argv: &CArgv, envp: &CArgv) -> io::Error {
    // SAFETY: all three pointers are valid, NUL/NULL-terminated and owned by
    // the caller for the duration of the call.
    unsafe {
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    io::Error::last_os_error()
}

/// `_exit(2)`: ends the process without running destructors or atexit
/// handlers (the only correct exit for a forked child that failed to exec).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Writes `errno` as 4 bytes to `fd`, ignoring failure (used by a forked
/// child to report why its exec failed).
fn report_errno(fd: RawFd, errno: i32) {
    let bytes = errno.to_ne_bytes();
    // SAFETY: `bytes` is a valid 4-byte buffer; a bad fd only yields EBADF.
    unsafe {
        libc::write(fd, bytes.as_ptr().cast(), bytes.len());
    }
}

/// Sets `IFF_UP` on the loopback interface of the current network
/// namespace.
pub fn bring_loopback_up() -> io::Result<()> {
    use rustix::net::{AddressFamily, SocketType};
    let sock = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)?;
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the interface named in `req` and writes
    // its flags into `req`, a valid, exclusively borrowed ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member `ifru_flags` was just written by the kernel.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP as libc::c_short);
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The Landlock ABI version of the running kernel, or 0 (or a negative
/// errno) when Landlock is absent or disabled.
pub fn landlock_abi_version() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attribute pointer, size 0 and the VERSION flag the
    // call only returns a number; no memory is read or written.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        0
    } else {
        v as i32
    }
}

/// `close_range(first, last, 0)`, or with `CLOSE_RANGE_CLOEXEC` when
/// `cloexec` (the descriptors stay open until the next exec).
///
/// Only for a forked child about to exec: no Rust object owning a
/// descriptor in the range will run again there.
fn close_range(first: u32, last: u32, cloexec: bool) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    let flags = if cloexec { CLOSE_RANGE_CLOEXEC } else { 0 };
    // SAFETY: closing descriptors has no memory-safety effect; this runs in
    // a child that only execs or exits afterwards, so no owner of a closed
    // number survives to use it.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Restores the default disposition of every catchable signal but SIGPIPE,
/// which is ignored (the Rust runtime's choices, and ignored signals,
/// would otherwise survive exec). Async-signal-safe.
fn reset_signal_dispositions() {
    for sig in 1..32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SIGPIPE is ignored, as systemd does for services
        // (IgnoreSIGPIPE=yes): a client that goes away mid-answer costs the
        // app an EPIPE, not its life.
        let disposition = if sig == libc::SIGPIPE {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        };
        // SAFETY: installing SIG_DFL or SIG_IGN involves no handler code;
        // `signal` is async-signal-safe.
        unsafe {
            libc::signal(sig, disposition);
        }
    }
}

/// Takes ownership of descriptor number `fd`, which the previous stage
/// passed across `exec` and named on the command line.
///
/// Safe because ownership is proven, not assumed: a descriptor that
/// crossed an `exec` has no close-on-exec flag, while every descriptor
/// Rust code in this process opens has one (std, rustix and tokio all open
/// with `O_CLOEXEC`). So an open number without the flag is inherited and
/// owned by nobody yet; adopting it sets the flag (the app must not
/// inherit it either), which also makes a second adoption of the same
/// number fail.
pub fn adopt_fd(fd: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::io::FdFlags;
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is stdio"),
        ));
    }
    // SAFETY: only used to probe and flag the number, for these two calls;
    // no ownership is taken.
    let probe = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = rustix::io::fcntl_getfd(probe)?;
    if flags.contains(FdFlags::CLOEXEC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} was not inherited (it is close-on-exec: opened here, or adopted already)"),
        ));
    }
    rustix::io::fcntl_setfd(probe, flags | FdFlags::CLOEXEC)?;
    // SAFETY: the number is open and was inherited across exec (checked
    // above), so nothing in this process owns it; the flag now set keeps
    // any other adoption of it from succeeding.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Makes `ps` and `pgrep -f` show `text` (NUL-separated arguments) as
/// this process's command line, by pointing the kernel's record of where
/// the command line lies (`prctl(PR_SET_MM_ARG_START/ARG_END)`) at a
/// buffer that is leaked, so it lives as long as the process. Needs
/// `CAP_SYS_RESOURCE` (the launcher runs as root); nothing of our own
/// memory is rewritten behind the program's back.
pub fn set_command_line(text: Vec<u8>) -> io::Result<()> {
    use rustix::process::{set_virtual_memory_map_address, VirtualMemoryMapAddress as At};
    let mut text = text;
    if text.last() != Some(&0) {
        text.push(0);
    }
    let text: &'static [u8] = Box::leak(text.into_boxed_slice());
    let start = std::ptr::NonNull::from(text).cast::<std::ffi::c_void>();
    // SAFETY: `start` is the address of the leaked slice's first byte;
    // in bounds, since the slice is not empty (it ends with a NUL).
    let end = unsafe { start.byte_add(text.len()) };
    // The kernel requires start <= end at each step: a heap buffer lies
    // below the stack where the original arguments are, so start moves
    // first (the old end is above it), then end.
    for (which, address) in [(At::ArgStart, start), (At::ArgEnd, end)] {
        // SAFETY: the kernel only reads the command line from these
        // addresses (for /proc/PID/cmdline); both point into (or one past)
        // a buffer that is never freed or written again.
        unsafe { set_virtual_memory_map_address(which, Some(address)) }?;
    }
    Ok(())
}

/// `dup3(old, new, O_CLOEXEC)`. Async-signal-safe.
fn dup_cloexec_to(old: RawFd, new: RawFd) -> io::Result<()> {
    if old == new {
        return Ok(());
    }
    // SAFETY: dup3 only manipulates the descriptor table; a bad number
    // yields EBADF.
    if unsafe { libc::dup3(old, new, libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `unshare(flags)` for namespace flags only.
pub fn unshare_namespaces(flags: rustix::thread::UnshareFlags) -> rustix::io::Result<()> {
    use rustix::thread::UnshareFlags as F;
    let namespaces =
        F::NEWUSER | F::NEWNS | F::NEWNET | F::NEWIPC | F::NEWUTS | F::NEWPID | F::NEWCGROUP;
    if !namespaces.contains(flags) {
        return Err(rustix::io::Errno::INVAL);
    }
    // SAFETY: rustix marks unshare unsafe because CLONE_FILES/CLONE_FS can
    // invalidate descriptors and working directories other code relies on;
    // we pass namespace flags only (checked above), which affect neither.
    unsafe { rustix::thread::unshare_unsafe(flags) }
}

/// `clone(flags | SIGCHLD)` without a new stack: like `fork`, but the
/// child starts in the namespaces `flags` creates (and, with
/// `CLONE_NEWPID`, as PID 1 of the new pid namespace).
///
/// Same contract as [`fork`]: single-threaded caller, system calls only in
/// the child until it execs or exits.
fn clone_into_namespaces(flags: libc::c_int) -> io::Result<Forked> {
    // SAFETY: without CLONE_VM and with a NULL stack the child gets a copy
    // of our address space, exactly as with fork; the caller is
    // single-threaded and the child only makes system calls (see above).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

/// `clone3(CLONE_INTO_CGROUP)`: as [`clone_into_namespaces`], and the
/// child starts as a member of the cgroup whose directory `cgroup` is
/// open on (cgroup v2, Linux 5.7+), so that nothing has to move it there
/// afterwards. Moving a process into a v2 cgroup takes the kernel's global
/// threadgroup lock, whose write side waits for an RCU grace period
/// (7-25 ms); a process born inside skips it.
///
/// Same contract as [`fork`]. Fails (ENOSYS, E2BIG, EINVAL) where the
/// kernel or a filter does not offer it; the caller falls back.
fn clone3_into_cgroup(flags: libc::c_int, cgroup: BorrowedFd<'_>) -> io::Result<Forked> {
    /// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: flags as u32 as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.as_raw_fd() as u64,
    };
    // SAFETY: `args` is a whole `clone_args` of the size passed, live
    // across the call, which only reads it. Without CLONE_VM and with no
    // stack the child gets a copy of our address space, exactly as with
    // fork; the caller is single-threaded and the child only makes system
    // calls (see above).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

/// `dup2(old, new)`: `new` refers to `old`'s file and is inherited across
/// exec. Async-signal-safe.
fn dup_to(old: RawFd, new: RawFd) -> io::Result<()> {
    // SAFETY: dup2 only manipulates the descriptor table; a bad number
    // yields EBADF.
    if unsafe { libc::dup2(old, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Registers `fd` (a signalfd) with the tokio reactor of the current
/// runtime, so the agent can await signals.
pub fn async_signal_fd(
    fd: nix::sys::signalfd::SignalFd,
) -> io::Result<tokio::io::unix::AsyncFd<nix::sys::signalfd::SignalFd>> {
    // SAFETY: the AsyncFd owns the SignalFd, which owns its descriptor; the
    // descriptor therefore stays open for as long as it is registered and
    // is closed only when the AsyncFd (deregistering first) is dropped.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into())
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, program)`: the call's result.
fn seccomp_set_mode_filter(program: &[libc::sock_filter], flags: libc::c_ulong) -> io::Result<i64> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `len` initialised instructions that outlive
    // the call; the kernel copies the program and only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    match r {
        r if r < 0 => Err(io::Error::last_os_error()),
        // With TSYNC, a positive result names a thread that could not be
        // synchronised (its filters differ): nothing was installed.
        r if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 && r > 0 => Err(io::Error::other(
            format!("thread {r} could not take the filter (SECCOMP_FILTER_FLAG_TSYNC)"),
        )),
        r => Ok(r),
    }
}

/// Installs `program` on every thread of the process at once
/// (`SECCOMP_FILTER_FLAG_TSYNC`); all of them must carry the same filters
/// already. `no_new_privs` must be set.
pub fn install_seccomp_filter_on_all_threads(program: &[libc::sock_filter]) -> io::Result<()> {
    seccomp_set_mode_filter(program, libc::SECCOMP_FILTER_FLAG_TSYNC).map(drop)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, ...)`: installs `program` on the
/// calling thread (inherited by threads and children it makes later).
/// With `listener`, also asks for the descriptor its
/// `SECCOMP_RET_USER_NOTIF` actions go to (`SECCOMP_FILTER_FLAG_NEW_LISTENER`)
/// and returns it. `no_new_privs` must be set.
pub fn install_seccomp_filter(
    program: &[libc::sock_filter],
    listener: bool,
) -> io::Result<Option<std::os::fd::OwnedFd>> {
    let flags = if listener {
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        0
    };
    let fd = seccomp_set_mode_filter(program, flags)?;
    if !listener {
        return Ok(None);
    }
    use std::os::fd::FromRawFd;
    // SAFETY: the call just returned this fresh listener descriptor
    // (close-on-exec); nothing else knows its number yet.
    Ok(Some(unsafe {
        std::os::fd::OwnedFd::from_raw_fd(fd as RawFd)
    }))
}

/// Waits for the next call held by a seccomp listener
/// (`SECCOMP_IOCTL_NOTIF_RECV`).
pub fn seccomp_notif_receive(listener: BorrowedFd<'_>) -> io::Result<libc::seccomp_notif> {
    // SAFETY: an all-zero `seccomp_notif` is a valid value (plain integers),
    // and the kernel requires the buffer zeroed.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes exactly one `seccomp_notif` (its size is
    // encoded in the request number) into `notif`, which we own.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut notif as *mut libc::seccomp_notif,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(notif)
}

/// How to answer a held call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifAnswer {
    /// It fails with this errno; it never runs.
    Refuse(i32),
    /// It returns this value; it never runs (we did its work).
    Return(i64),
    /// It runs as the caller made it (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`):
    /// only for calls whose outcome nothing read from the caller's memory
    /// decided.
    Continue,
}

/// Answers the held call `id` (`SECCOMP_IOCTL_NOTIF_SEND`).
pub fn seccomp_notif_answer(
    listener: BorrowedFd<'_>,
    id: u64,
    answer: NotifAnswer,
) -> io::Result<()> {
    const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;
    let (val, error, flags) = match answer {
        NotifAnswer::Refuse(errno) => (0, -errno, 0),
        NotifAnswer::Return(val) => (val, 0, 0),
        NotifAnswer::Continue => (0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE),
    };
    let mut resp = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    // SAFETY: the ioctl reads exactly one `seccomp_notif_resp` from `resp`,
    // which lives across the call.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut resp as *mut libc::seccomp_notif_resp,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the held call `id` is still pending (`SECCOMP_IOCTL_NOTIF_ID_VALID`):
/// checked after reading the caller's memory, so that what was read is
/// known to come from the process that made the call, not from one that
/// reused its pid.
pub fn seccomp_notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    // SAFETY: the ioctl reads one u64 from `id`, which lives across the
    // call.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &mut id as *mut u64,
        )
    };
    rc == 0
}

/// Copies `buf.len()` bytes from address `remote` of process `pid` into
/// `buf` (`process_vm_readv`); returns how many were read. Needs ptrace
/// access to `pid`. The remote address is only a number to us: nothing
/// of our own memory but `buf` is touched.
pub fn read_process_memory(pid: i32, remote: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: remote as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, exclusively borrowed and `len`
    // bytes long, the only memory of ours the kernel writes; `remote` is
    // validated by the kernel against the other process's mappings.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `ptrace(PTRACE_ATTACH, pid)`, detaching again at once if it worked: for
/// the front door's self-test, which must find it refused. No memory is
/// passed either way.
pub fn try_ptrace_attach(pid: i32) -> io::Result<()> {
    // SAFETY: PTRACE_ATTACH and PTRACE_DETACH take no pointer (addr and
    // data are 0); the kernel reads nothing of ours.
    let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0usize, 0usize) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize) };
    Ok(())
}

/// `struct fsxattr` of `<linux/fs.h>`, for `FS_IOC_FS[GS]ETXATTR`.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// `_IOR('X', 31, struct fsxattr)` and `_IOW('X', 32, struct fsxattr)`.
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
/// New entries of a directory with this flag get its project id.
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
/// `PRJQUOTA` of `<sys/quota.h>`.
const PRJQUOTA: libc::c_int = 2;
/// Quota block limits are counted in these (`QIF_DQBLKSIZE`).
const QUOTA_BLOCK: u64 = 1024;

fn fs_xattr(fd: BorrowedFd<'_>) -> io::Result<FsXattr> {
    let mut attr = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR writes one `struct fsxattr` (which
    // `FsXattr` lays out exactly, `repr(C)`) into `attr`, exclusively
    // borrowed for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &mut attr as *mut FsXattr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

/// The project id of the open file or directory `fd`.
pub fn project_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(fs_xattr(fd)?.projid)
}

/// Puts the open file or directory `fd` into project `id`; a directory
/// also gets `PROJINHERIT`, so that what is created in it is counted to
/// the same project. Needs root (`CAP_FOWNER`) in the initial user
/// namespace.
pub fn set_project_id(fd: BorrowedFd<'_>, id: u32, directory: bool) -> io::Result<()> {
    let mut attr = fs_xattr(fd)?;
    attr.projid = id;
    if directory {
        attr.xflags |= FS_XFLAG_PROJINHERIT;
    }
    // SAFETY: FS_IOC_FSSETXATTR only reads the `struct fsxattr` in
    // `attr`, which lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR, &attr as *const FsXattr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `quotactl_fd(fd, QCMD(cmd, PRJQUOTA), id, block)`.
fn project_quotactl(
    fd: BorrowedFd<'_>,
    cmd: libc::c_int,
    id: u32,
    block: &mut libc::dqblk,
) -> io::Result<()> {
    let qcmd = ((cmd as u32) << 8 | PRJQUOTA as u32) as libc::c_int;
    // SAFETY: Q_GETQUOTA writes and Q_SETQUOTA reads one `struct
    // if_dqblk`, which `libc::dqblk` lays out; `block` is exclusively
    // borrowed for the call and the kernel touches nothing else of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fd.as_raw_fd(),
            qcmd,
            id as libc::c_int,
            block as *mut libc::dqblk,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bytes project `id` uses on the file system of `fd` (`ESRCH` when the
/// file system keeps no project quotas).
pub fn project_usage(fd: BorrowedFd<'_>, id: u32) -> io::Result<u64> {
    // SAFETY: `dqblk` is plain old data; all-zero is a valid value.
    let mut block: libc::dqblk = unsafe { std::mem::zeroed() };
    project_quotactl(fd, libc::Q_GETQUOTA, id, &mut block)?;
    Ok(block.dqb_curspace)
}

/// Sets project `id`'s hard block limit on the file system of `fd` to
/// `bytes` (rounded up to the quota's 1 KiB blocks; 0 removes it). Needs
/// `CAP_SYS_ADMIN`.
pub fn set_project_limit(fd: BorrowedFd<'_>, id: u32, bytes: u64) -> io::Result<()> {
    // SAFETY: as in `project_usage`.
    let mut block: libc::dqblk = unsafe { std::mem::zeroed() };
    block.dqb_bhardlimit = bytes.div_ceil(QUOTA_BLOCK);
    block.dqb_bsoftlimit = 0;
    block.dqb_valid = libc::QIF_BLIMITS;
    project_quotactl(fd, libc::Q_SETQUOTA, id, &mut block)
}

/// `EXT4_IOC_RESIZE_FS`: `_IOW('f', 16, __u64)`.
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;

/// Grows the mounted ext4 file system that `fd` (any file or directory
/// on it) belongs to, to `blocks` of its blocks, online (what resize2fs
/// does for a mounted file system, without opening the block device that
/// newer kernels keep from writers while mounted). Needs
/// `CAP_SYS_RESOURCE`.
pub fn ext4_grow(fd: BorrowedFd<'_>, blocks: u64) -> io::Result<()> {
    let count = blocks;
    // SAFETY: the ioctl reads one u64 (the new block count) from `count`,
    // which lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), EXT4_IOC_RESIZE_FS, &count as *const u64) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
