//! Binding only `$PORT` where Landlock cannot say so: `listen` on an
//! unbound socket (no Landlock ABI checks it) on every kernel, and `bind`
//! where Landlock has no TCP rules (ABI < 4: Debian 12's 6.1 kernel).
//!
//! The sandbox's filter hands those calls to the seccomp listener, which does the call itself, on the app's own socket
//! (taken with `pidfd_getfd`) and with its own copy of the app's address
//! (read once with `process_vm_readv`), and answers with the result. The
//! held call never runs: nothing the app changes after the check (the
//! address in its memory, the socket behind the descriptor number) can
//! change what was bound, so there is no check-then-continue race.
//!
//! The rule is Landlock's TCP bind rule: a stream socket of the Internet
//! families binds only `$PORT` (any address), and `listen` on one that is
//! not bound (which would bind a port of the kernel's choosing) is
//! refused. Datagram and Unix sockets bind as asked, as they do under
//! Landlock's rules.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags};

use crate::sys::{self, NotifAnswer};

/// What the mediation allows.
#[derive(Debug, Clone, Copy)]
pub struct Mediation {
    /// The one TCP port the app may bind.
    pub app_port: u16,
    /// Whether `bind` is mediated too (else only `listen`).
    pub binds: bool,
}

/// The longest socket address the kernel accepts (`sockaddr_storage`).
const MAX_ADDR: usize = 128;

/// The answer to one held call, and whether the policy (not the kernel)
/// refused it, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What the caller gets.
    pub answer: NotifAnswer,
    /// The port rule refused it.
    pub refused_by_policy: bool,
}

impl Decision {
    fn kernel(result: io::Result<()>) -> Self {
        let answer = match result {
            Ok(()) => NotifAnswer::Return(0),
            Err(e) => NotifAnswer::Refuse(e.raw_os_error().unwrap_or(libc::EINVAL)),
        };
        Self {
            answer,
            refused_by_policy: false,
        }
    }

    fn policy() -> Self {
        Self {
            answer: NotifAnswer::Refuse(libc::EACCES),
            refused_by_policy: true,
        }
    }
}

impl Mediation {
    /// Decides (and performs) the held `bind` or `listen` in `req`;
    /// `None` for any other call. `listener` is the notification
    /// descriptor, to check that what was read came from the caller.
    pub fn answer(&self, listener: BorrowedFd<'_>, req: &libc::seccomp_notif) -> Option<Decision> {
        let nr = libc::c_long::from(req.data.nr);
        let ours = nr == libc::SYS_listen || (self.binds && nr == libc::SYS_bind);
        if !ours {
            return None;
        }
        let args = req.data.args;
        let caller = req.pid as i32;
        // The kernel takes the descriptor as an int: so do we.
        let Some(socket) = take_socket(caller, args[0] as i32) else {
            return Some(Decision::kernel(Err(io::Error::from_raw_os_error(
                libc::EBADF,
            ))));
        };
        let Ok(socket) = socket else {
            // Not ours to take (the app made itself undumpable): refuse.
            return Some(Decision::kernel(Err(io::Error::from_raw_os_error(
                libc::EPERM,
            ))));
        };
        let decision = if nr == libc::SYS_bind {
            let mut addr = [0u8; MAX_ADDR];
            let len = (args[2] as u32) as usize;
            if len > MAX_ADDR {
                return Some(Decision::kernel(Err(io::Error::from_raw_os_error(
                    libc::EINVAL,
                ))));
            }
            match sys::read_process_memory(caller, args[1], &mut addr[..len]) {
                Ok(n) if n == len => {}
                _ => {
                    return Some(Decision::kernel(Err(io::Error::from_raw_os_error(
                        libc::EFAULT,
                    ))))
                }
            }
            // The caller is still the one that made the call (its pid was
            // not reused while we read): what we hold is its socket and
            // its address.
            if !sys::seccomp_notif_id_valid(listener, req.id) {
                return Some(Decision::kernel(Err(io::Error::from_raw_os_error(
                    libc::EINTR,
                ))));
            }
            self.bind(caller, socket.as_fd(), &addr[..len])
        } else {
            if !sys::seccomp_notif_id_valid(listener, req.id) {
                return Some(Decision::kernel(Err(io::Error::from_raw_os_error(
                    libc::EINTR,
                ))));
            }
            // The kernel clamps the backlog; it takes it as an int.
            self.listen(socket.as_fd(), args[1] as i32)
        };
        Some(decision)
    }

    fn bind(&self, caller: i32, socket: BorrowedFd<'_>, addr: &[u8]) -> Decision {
        let Some(kind) = Kind::of(socket) else {
            return Decision::kernel(Err(io::Error::from_raw_os_error(libc::ENOTSOCK)));
        };
        let parsed = match parse_address(kind.family, addr, caller) {
            Ok(parsed) => parsed,
            Err(errno) => return Decision::kernel(Err(io::Error::from_raw_os_error(errno))),
        };
        if kind.port_ruled() && parsed.port() != Some(self.app_port) {
            return Decision::policy();
        }
        Decision::kernel(parsed.bind(socket))
    }

    fn listen(&self, socket: BorrowedFd<'_>, backlog: i32) -> Decision {
        let Some(kind) = Kind::of(socket) else {
            return Decision::kernel(Err(io::Error::from_raw_os_error(libc::ENOTSOCK)));
        };
        if kind.port_ruled() {
            let port = rustix::net::getsockname(socket)
                .ok()
                .and_then(|a| std::net::SocketAddr::try_from(a).ok())
                .map(|a| a.port());
            // Unbound: listen would pick a port of the kernel's choosing.
            if port != Some(self.app_port) {
                return Decision::policy();
            }
        }
        Decision::kernel(rustix::net::listen(socket, backlog).map_err(io::Error::from))
    }
}

/// The caller's descriptor `fd`, duplicated into the agent. `None` when it
/// has no such descriptor; `Some(Err)` when it may not be taken.
fn take_socket(caller: i32, fd: i32) -> Option<io::Result<OwnedFd>> {
    let pidfd = match open_process(caller) {
        Ok(pidfd) => pidfd,
        Err(e) => return Some(Err(e)),
    };
    match rustix::process::pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()) {
        Ok(socket) => Some(Ok(socket)),
        Err(rustix::io::Errno::BADF) => None,
        Err(e) => Some(Err(e.into())),
    }
}

/// A pidfd for the process whose thread `tid` made the call. Before 6.9
/// (`PIDFD_THREAD`) only a thread-group leader has one, and a call made by
/// any other thread of a threaded server is answered through its leader
/// (threads share their descriptor table).
fn open_process(tid: i32) -> io::Result<OwnedFd> {
    let pid = Pid::from_raw(tid).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::INVAL) => {
            let status = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
            let tgid = status
                .lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse::<i32>().ok())
                .and_then(Pid::from_raw)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
            Ok(rustix::process::pidfd_open(tgid, PidfdFlags::empty())?)
        }
        Err(e) => Err(e.into()),
    }
}

/// What the socket is, asked of the socket (never of the caller).
#[derive(Debug, Clone, Copy)]
struct Kind {
    family: AddressFamily,
    socket_type: SocketType,
}

impl Kind {
    fn of(socket: BorrowedFd<'_>) -> Option<Self> {
        Some(Self {
            family: rustix::net::sockopt::socket_domain(socket).ok()?,
            socket_type: rustix::net::sockopt::socket_type(socket).ok()?,
        })
    }

    /// Whether the port rule applies: every Internet socket but datagram
    /// ones (TCP, and SCTP or MPTCP streams alike).
    fn port_ruled(self) -> bool {
        (self.family == AddressFamily::INET || self.family == AddressFamily::INET6)
            && self.socket_type != SocketType::DGRAM
    }
}

/// A socket address as the agent will bind it.
#[derive(Debug)]
enum Parsed {
    V4(SocketAddrV4),
    V6(SocketAddrV6),
    Unix(SocketAddrUnix),
}

impl Parsed {
    fn port(&self) -> Option<u16> {
        match self {
            Parsed::V4(a) => Some(a.port()),
            Parsed::V6(a) => Some(a.port()),
            Parsed::Unix(_) => None,
        }
    }

    fn bind(&self, socket: BorrowedFd<'_>) -> io::Result<()> {
        match self {
            Parsed::V4(a) => rustix::net::bind(socket, a),
            Parsed::V6(a) => rustix::net::bind(socket, a),
            Parsed::Unix(a) => rustix::net::bind(socket, a),
        }
        .map_err(io::Error::from)
    }
}

/// Reads `bytes` (a `struct sockaddr_*` of the caller's) as the kernel's
/// bind of a `family` socket would, with its errnos. A relative Unix path
/// is made absolute with the caller's working directory (the agent's is
/// not the app's).
fn parse_address(family: AddressFamily, bytes: &[u8], caller: i32) -> Result<Parsed, i32> {
    let u16_at = |i: usize| u16::from_ne_bytes([bytes[i], bytes[i + 1]]);
    let be16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if bytes.len() < 2 {
        return Err(libc::EINVAL);
    }
    let given = u16_at(0);
    if family == AddressFamily::INET {
        if bytes.len() < 16 {
            return Err(libc::EINVAL);
        }
        let ip = Ipv4Addr::from(<[u8; 4]>::try_from(&bytes[4..8]).map_err(|_| libc::EINVAL)?);
        // Linux accepts AF_UNSPEC for the any address (old programs).
        let unspec_any = given == libc::AF_UNSPEC as u16 && ip.is_unspecified();
        if given != libc::AF_INET as u16 && !unspec_any {
            return Err(libc::EAFNOSUPPORT);
        }
        return Ok(Parsed::V4(SocketAddrV4::new(ip, be16_at(2))));
    }
    if family == AddressFamily::INET6 {
        // SIN6_LEN_RFC2133: the scope id is optional.
        if bytes.len() < 24 {
            return Err(libc::EINVAL);
        }
        if given != libc::AF_INET6 as u16 {
            return Err(libc::EAFNOSUPPORT);
        }
        let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[8..24]).map_err(|_| libc::EINVAL)?);
        let flowinfo = u32::from_be(u32_at(4));
        let scope = if bytes.len() >= 28 { u32_at(24) } else { 0 };
        return Ok(Parsed::V6(SocketAddrV6::new(
            ip,
            be16_at(2),
            flowinfo,
            scope,
        )));
    }
    if family == AddressFamily::UNIX {
        if given != libc::AF_UNIX as u16 {
            return Err(libc::EINVAL);
        }
        let path = &bytes[2..];
        if path.is_empty() {
            // Autobind: an abstract name of the kernel's choosing.
            return Ok(Parsed::Unix(SocketAddrUnix::new_unnamed()));
        }
        if path[0] == 0 {
            return SocketAddrUnix::new_abstract_name(&path[1..])
                .map(Parsed::Unix)
                .map_err(|e| e.raw_os_error());
        }
        let path = path.split(|&b| b == 0).next().unwrap_or_default();
        let mut full = Vec::with_capacity(path.len());
        if path.first() != Some(&b'/') {
            let cwd =
                std::fs::read_link(format!("/proc/{caller}/cwd")).map_err(|_| libc::ENOENT)?;
            full.extend_from_slice(cwd.as_os_str().as_encoded_bytes());
            full.push(b'/');
        }
        full.extend_from_slice(path);
        return SocketAddrUnix::new(std::ffi::OsStr::from_bytes(&full))
            .map(Parsed::Unix)
            .map_err(|e| e.raw_os_error());
    }
    Err(libc::EAFNOSUPPORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(family: u16, port: u16, ip: [u8; 4]) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[0..2].copy_from_slice(&family.to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&ip);
        b
    }

    #[test]
    fn internet_addresses_parse_as_the_kernel_reads_them() {
        let inet = AddressFamily::INET;
        let ok = parse_address(inet, &v4(libc::AF_INET as u16, 8000, [127, 0, 0, 1]), 1);
        assert_eq!(ok.expect("parses").port(), Some(8000));
        let any = parse_address(inet, &v4(libc::AF_UNSPEC as u16, 9, [0; 4]), 1);
        assert_eq!(any.expect("AF_UNSPEC with the any address").port(), Some(9));
        let err = |r: Result<Parsed, i32>| r.err();
        assert_eq!(
            err(parse_address(
                inet,
                &v4(libc::AF_UNSPEC as u16, 9, [1, 2, 3, 4]),
                1
            )),
            Some(libc::EAFNOSUPPORT)
        );
        assert_eq!(err(parse_address(inet, &[2, 0, 0], 1)), Some(libc::EINVAL));
        let mut six = vec![0u8; 24];
        six[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        six[2..4].copy_from_slice(&8000u16.to_be_bytes());
        six[23] = 1;
        let parsed = parse_address(AddressFamily::INET6, &six, 1).expect("a v6 address");
        assert_eq!(parsed.port(), Some(8000));
        assert_eq!(
            err(parse_address(AddressFamily::INET6, &six[..20], 1)),
            Some(libc::EINVAL)
        );
    }

    #[test]
    fn unix_addresses_keep_their_kind() {
        let unix = (libc::AF_UNIX as u16).to_ne_bytes();
        let mut abs = unix.to_vec();
        abs.extend_from_slice(b"\0name");
        assert!(matches!(
            parse_address(AddressFamily::UNIX, &abs, 1),
            Ok(Parsed::Unix(a)) if a.abstract_name() == Some(&b"name"[..])
        ));
        let mut path = unix.to_vec();
        path.extend_from_slice(b"/tmp/s.sock\0junk");
        assert!(matches!(
            parse_address(AddressFamily::UNIX, &path, 1),
            Ok(Parsed::Unix(a)) if a.path().is_some_and(|p| p.to_bytes() == b"/tmp/s.sock")
        ));
        assert!(parse_address(AddressFamily::UNIX, &unix, 1).is_ok());
    }

    #[test]
    fn the_port_rule_covers_internet_streams_only() {
        let kind = |family, socket_type| Kind {
            family,
            socket_type,
        };
        assert!(kind(AddressFamily::INET, SocketType::STREAM).port_ruled());
        assert!(kind(AddressFamily::INET6, SocketType::SEQPACKET).port_ruled());
        assert!(!kind(AddressFamily::INET, SocketType::DGRAM).port_ruled());
        assert!(!kind(AddressFamily::UNIX, SocketType::STREAM).port_ruled());
    }
}
