//! One end of the control socket: a message is one packet of JSON, with
//! its descriptors (if its kind carries any) as `SCM_RIGHTS`. A packet
//! that is truncated, not JSON of the expected kind, or carries a number
//! of descriptors other than its kind's is refused (its descriptors
//! closed) and the caller is told: the socket stays usable.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::Interest;
use tokio::net::UnixDatagram;

use super::messages::MAX_MESSAGE;

/// Most descriptors one message may carry.
pub const MAX_FDS: usize = 8;

/// Why a message could not be sent or was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed, or the peer closed it.
    #[error("the control socket: {0}")]
    Io(#[from] io::Error),
    /// The peer closed it.
    #[error("the control socket was closed by the other side")]
    Closed,
    /// A packet that is not a valid message (refused, nothing else done).
    #[error("a bad message on the control socket: {0}")]
    Bad(String),
}

/// A control-socket end, for use inside a tokio runtime.
#[derive(Debug)]
pub struct Wire {
    socket: UnixDatagram,
    /// Where packets are received (one receiver per end; kept, so that a
    /// message costs no fresh allocation of the largest size).
    buf: std::sync::Mutex<Vec<u8>>,
}

impl Wire {
    /// Takes `socket` (one end of a seqpacket pair).
    pub fn new(socket: OwnedFd) -> io::Result<Self> {
        rustix::io::ioctl_fionbio(&socket, true)?;
        Ok(Self {
            socket: UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(socket))?,
            buf: std::sync::Mutex::new(vec![0u8; MAX_MESSAGE]),
        })
    }

    /// Sends `msg` with `fds`.
    pub async fn send<T: Serialize>(
        &self,
        msg: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), WireError> {
        let bytes = encode(msg)?;
        self.socket
            .async_io(Interest::WRITABLE, || {
                send_packet(self.socket.as_fd(), &bytes, fds, SendFlags::DONTWAIT)
            })
            .await?;
        Ok(())
    }

    /// The next message and its descriptors; `expected` says how many a
    /// message of that kind must carry.
    pub async fn recv<T: DeserializeOwned>(
        &self,
        expected: impl Fn(&T) -> usize,
    ) -> Result<(T, Vec<OwnedFd>), WireError> {
        let (bytes, fds) = self
            .socket
            .async_io(Interest::READABLE, || {
                let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
                let (len, fds) =
                    receive_packet(self.socket.as_fd(), &mut buf, RecvFlags::DONTWAIT)?;
                Ok((len.map(|n| buf[..n].to_vec()), fds))
            })
            .await?;
        decode(&bytes?, fds, expected)
    }
}

fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let bytes = serde_json::to_vec(msg).map_err(|e| WireError::Bad(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::Bad(format!(
            "a message of {} bytes (at most {MAX_MESSAGE})",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    expected: impl Fn(&T) -> usize,
) -> Result<(T, Vec<OwnedFd>), WireError> {
    let msg: T = serde_json::from_slice(bytes).map_err(|e| WireError::Bad(e.to_string()))?;
    let wanted = expected(&msg);
    if fds.len() != wanted {
        return Err(WireError::Bad(format!(
            "{} descriptor(s) with a message that carries {wanted}",
            fds.len()
        )));
    }
    Ok((msg, fds))
}

/// Sends `msg` with `fds` on a blocking socket (before any runtime).
pub fn send_blocking<T: Serialize>(
    socket: BorrowedFd<'_>,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> Result<(), WireError> {
    send_packet(socket, &encode(msg)?, fds, SendFlags::empty())?;
    Ok(())
}

/// Receives one message on a blocking socket (before any runtime).
pub fn recv_blocking<T: DeserializeOwned>(
    socket: BorrowedFd<'_>,
    expected: impl Fn(&T) -> usize,
) -> Result<(T, Vec<OwnedFd>), WireError> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (len, fds) = receive_packet(socket, &mut buf, RecvFlags::empty())?;
    decode(&buf[..len?], fds, expected)
}

fn send_packet(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    flags: SendFlags,
) -> io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_FDS
        || (!fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)))
    {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[io::IoSlice::new(bytes)],
        &mut control,
        flags | SendFlags::NOSIGNAL,
    )?;
    if sent != bytes.len() {
        return Err(io::Error::other("a message was sent short"));
    }
    Ok(())
}

/// One packet: its length (or why it is refused) and its descriptors;
/// an I/O error, or `Closed`-as-EOF, when the socket ends.
#[allow(clippy::type_complexity)]
fn receive_packet(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
) -> io::Result<(Result<usize, WireError>, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        socket,
        &mut [io::IoSliceMut::new(buf)],
        &mut control,
        flags | RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    if got.bytes == 0 && fds.is_empty() {
        return Ok((Err(WireError::Closed), Vec::new()));
    }
    if got.flags.contains(ReturnFlags::TRUNC) || got.flags.contains(ReturnFlags::CTRUNC) {
        return Ok((
            Err(WireError::Bad("a truncated message".into())),
            Vec::new(),
        ));
    }
    Ok((Ok(got.bytes), fds))
}

/// A connected seqpacket pair for the control socket, close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Checks that `fd` is a listening TCP socket (what `Init` carries).
pub fn check_listener(fd: &OwnedFd) -> Result<(), WireError> {
    let bad = |why: String| WireError::Bad(why);
    let kind = rustix::net::sockopt::socket_type(fd).map_err(|e| bad(e.to_string()))?;
    let domain = rustix::net::sockopt::socket_domain(fd).map_err(|e| bad(e.to_string()))?;
    let listening = rustix::net::sockopt::socket_acceptconn(fd).map_err(|e| bad(e.to_string()))?;
    let inet =
        domain == rustix::net::AddressFamily::INET || domain == rustix::net::AddressFamily::INET6;
    if kind != rustix::net::SocketType::STREAM || !inet || !listening {
        return Err(bad(format!(
            "a listener that is not a listening TCP socket ({domain:?}, {kind:?}, listening: {listening})"
        )));
    }
    let _ = fd.as_fd();
    Ok(())
}

/// Checks that `fd` is a connected Unix seqpacket socket (a handoff
/// socket, what `Running` carries).
pub fn check_handoff(fd: &OwnedFd) -> Result<(), WireError> {
    let bad = |why: String| WireError::Bad(why);
    let kind = rustix::net::sockopt::socket_type(fd).map_err(|e| bad(e.to_string()))?;
    let domain = rustix::net::sockopt::socket_domain(fd).map_err(|e| bad(e.to_string()))?;
    if kind != rustix::net::SocketType::SEQPACKET || domain != rustix::net::AddressFamily::UNIX {
        return Err(bad(format!(
            "a handoff socket that is not a Unix seqpacket socket ({domain:?}, {kind:?})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front_link::messages::{ToFront, ToSupervisor};

    #[tokio::test]
    async fn messages_cross_with_exactly_their_descriptors() {
        let (a, b) = pair().unwrap();
        let (a, b) = (Wire::new(a).unwrap(), Wire::new(b).unwrap());
        let (h, _peer) = pair().unwrap();
        let running = ToFront::Running {
            request: Some(3),
            name: "x".into(),
            run: 9,
            app_port: 8000,
        };
        a.send(&running, &[h.as_fd()]).await.unwrap();
        let (got, fds) = b.recv::<ToFront>(ToFront::descriptors).await.unwrap();
        assert_eq!(got, running);
        assert_eq!(fds.len(), 1);
        check_handoff(&fds[0]).unwrap();
        assert!(check_listener(&fds[0]).is_err());
        // The same kind without its descriptor, or a descriptor where none
        // belongs: refused, and the socket still works.
        a.send(&running, &[]).await.unwrap();
        assert!(matches!(
            b.recv::<ToFront>(ToFront::descriptors).await,
            Err(WireError::Bad(_))
        ));
        a.send(&ToFront::Stopping, &[h.as_fd()]).await.unwrap();
        assert!(matches!(
            b.recv::<ToFront>(ToFront::descriptors).await,
            Err(WireError::Bad(_))
        ));
        // Not a message of the kind expected.
        let idle = ToSupervisor::Idle {
            name: "x".into(),
            run: 1,
        };
        a.send(&idle, &[]).await.unwrap();
        assert!(matches!(
            b.recv::<ToFront>(ToFront::descriptors).await,
            Err(WireError::Bad(_))
        ));
        a.send(&ToFront::Stopping, &[]).await.unwrap();
        let (got, _) = b.recv::<ToFront>(ToFront::descriptors).await.unwrap();
        assert_eq!(got, ToFront::Stopping);
        drop(a);
        assert!(matches!(
            b.recv::<ToFront>(ToFront::descriptors).await,
            Err(WireError::Closed)
        ));
    }
}
