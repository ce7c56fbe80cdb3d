//! The handoff socket: a `SOCK_SEQPACKET` pair beside the channel on which
//! host and agent pass connected sockets to each other, so that bulk
//! traffic does not cross the multiplexer. Each message is an 8-byte token
//! (big-endian) with exactly one descriptor; the token ties it to a request
//! made on the channel. The channel itself never carries descriptors.
//!
//! - host to agent: the upstream socket of an accepted egress stream
//!   ([`crate::EgressRequest::hand_off`]);
//! - agent to host: a connection to the app, asked for with
//!   [`crate::ControlMessage::ConnectApp`].
//!
//! Whatever arrives is only parked under its token; a receiver claims it
//! with [`Handoff::take`] and must check what it got. Anything malformed
//! (not 8 bytes, not exactly one descriptor) is dropped, and so is what
//! nobody claims within [`UNCLAIMED_FOR`].

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::sync::Notify;

/// Most descriptors parked and not yet claimed.
const MAX_PENDING: usize = 1024;
/// How long a descriptor nobody claims stays parked.
pub const UNCLAIMED_FOR: Duration = Duration::from_secs(10);

/// One end of a handoff socket pair, sending and receiving.
#[derive(Debug)]
pub struct Handoff {
    /// The seqpacket socket, held as a datagram socket only for tokio's
    /// readiness tracking: every send and receive is our own `sendmsg` /
    /// `recvmsg` on its descriptor.
    socket: UnixDatagram,
    pending: Mutex<HashMap<u64, (OwnedFd, Instant)>>,
    arrived: Notify,
}

impl Handoff {
    /// Takes `socket` (one end of a seqpacket pair) and receives on it
    /// until the peer closes it. Must be called inside a tokio runtime.
    pub fn start(socket: OwnedFd) -> io::Result<Arc<Self>> {
        rustix::io::ioctl_fionbio(&socket, true)?;
        let socket = UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(socket))?;
        let this = Arc::new(Self {
            socket,
            pending: Mutex::default(),
            arrived: Notify::new(),
        });
        let receiver = Arc::downgrade(&this);
        tokio::spawn(async move {
            loop {
                let Some(me) = receiver.upgrade() else {
                    return;
                };
                let got = me
                    .socket
                    .async_io(Interest::READABLE, || receive(me.socket.as_fd()))
                    .await;
                match got {
                    Ok(Some((token, fd))) => me.park(token, fd),
                    Ok(None) => {}
                    Err(_) => return, // the peer is gone
                }
            }
        });
        Ok(this)
    }

    fn park(&self, token: u64, fd: OwnedFd) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        pending.retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_FOR);
        if pending.len() < MAX_PENDING {
            pending.insert(token, (fd, now));
        }
        drop(pending);
        self.arrived.notify_waiters();
    }

    /// Sends `fd` under `token`, waiting while the peer's queue is full.
    pub async fn send(&self, token: u64, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.socket
            .async_io(Interest::WRITABLE, || send(self.socket.as_fd(), token, fd))
            .await
    }

    /// Sends `fd` under `token` only if that needs no waiting.
    pub fn try_send(&self, token: u64, fd: BorrowedFd<'_>) -> io::Result<()> {
        send(self.socket.as_fd(), token, fd)
    }

    /// The descriptor sent under `token`, waiting up to `wait` for it.
    pub async fn take(&self, token: u64, wait: Duration) -> Option<OwnedFd> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.arrived.notified();
            if let Some((fd, _)) = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&token)
            {
                return Some(fd);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }
}

fn send(socket: BorrowedFd<'_>, token: u64, fd: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [fd.as_fd()];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    let bytes = token.to_be_bytes();
    let sent = rustix::net::sendmsg(
        socket,
        &[io::IoSlice::new(&bytes)],
        &mut control,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )?;
    if sent != bytes.len() {
        return Err(io::Error::other("short handoff message"));
    }
    Ok(())
}

/// One message: `Ok(None)` for a malformed one (its descriptors closed),
/// an error at the end of the stream.
fn receive(socket: BorrowedFd<'_>) -> io::Result<Option<(u64, OwnedFd)>> {
    let mut token = [0u8; 8];
    // Room for one descriptor: the kernel closes any beyond (MSG_CTRUNC).
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        socket,
        &mut [io::IoSliceMut::new(&mut token)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    if got.bytes == 0 && fds.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if got.bytes != 8 || fds.len() != 1 || got.flags.contains(rustix::net::ReturnFlags::TRUNC) {
        return Ok(None);
    }
    Ok(fds.pop().map(|fd| (u64::from_be_bytes(token), fd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .expect("socketpair")
    }

    #[tokio::test]
    async fn a_descriptor_goes_across_under_its_token() {
        let (a, b) = pair();
        let (a, b) = (Handoff::start(a).unwrap(), Handoff::start(b).unwrap());
        let (x, _y) = std::os::unix::net::UnixStream::pair().unwrap();
        a.send(7, x.as_fd()).await.unwrap();
        assert!(b.take(8, Duration::from_millis(50)).await.is_none());
        let got = b.take(7, Duration::from_secs(5)).await.expect("arrived");
        assert_eq!(
            rustix::net::sockopt::socket_type(&got).unwrap(),
            rustix::net::SocketType::STREAM
        );
        // Claimed once only.
        assert!(b.take(7, Duration::from_millis(50)).await.is_none());
    }

    #[tokio::test]
    async fn malformed_messages_are_dropped() {
        let (a, b) = pair();
        let b = Handoff::start(b).unwrap();
        // A token without a descriptor, then a short token with one.
        rustix::net::send(&a, &9u64.to_be_bytes(), SendFlags::empty()).unwrap();
        let (x, _y) = std::os::unix::net::UnixStream::pair().unwrap();
        let fds = [x.as_fd()];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(
            &a,
            &[io::IoSlice::new(&[0, 0, 9])],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        assert!(b.take(9, Duration::from_millis(200)).await.is_none());
        // The socket still works afterwards.
        let a = Handoff::start(a).unwrap();
        a.send(10, x.as_fd()).await.unwrap();
        assert!(b.take(10, Duration::from_secs(5)).await.is_some());
    }
}
