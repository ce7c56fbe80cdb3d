//! The handoff socket: a `SOCK_SEQPACKET` pair beside the channel on which
//! the host side and the agent pass connected sockets to each other, so
//! that bulk traffic does not cross the multiplexer. Each message is an
//! 8-byte token (big-endian) with at most one descriptor; the token ties
//! it to a request. The channel itself never carries descriptors.
//!
//! - host to agent, with a descriptor: the upstream socket of an accepted
//!   egress stream ([`crate::EgressRequest::hand_off`]), sent by the
//!   supervisor;
//! - host to agent, without one: "connect to the app and send me that
//!   connection under this token", sent by the front door;
//! - agent to host, with a descriptor: that connection; without one: the
//!   app did not accept it.
//!
//! The host end is held by two processes (docs/privsep.md): the
//! supervisor only sends on it ([`Handoff::sender`]), the front door
//! receives ([`Handoff::start`]), so app connections reach the front door
//! and nobody else. Whatever arrives is only parked under its token; a
//! receiver claims it with [`Handoff::take`] and must check what it got.
//! Anything malformed (not 8 bytes, more than one descriptor) is dropped,
//! and so is what nobody claims within [`UNCLAIMED_FOR`].

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::sync::{mpsc, Notify};

/// Most descriptors parked and not yet claimed.
const MAX_PENDING: usize = 1024;
/// How long a descriptor nobody claims stays parked.
pub const UNCLAIMED_FOR: Duration = Duration::from_secs(10);
/// Requests for app connections the agent has not started on yet; beyond
/// them a request is dropped (and its asker's wait times out).
const MAX_QUEUED_REQUESTS: usize = 1024;

/// Which end of the pair, and so what a message without a descriptor
/// means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The front door: a refusal (the app did not accept).
    Host,
    /// The agent: a request for an app connection.
    Agent,
}

/// One end of a handoff socket pair.
#[derive(Debug)]
pub struct Handoff {
    /// The seqpacket socket, held as a datagram socket only for tokio's
    /// readiness tracking: every send and receive is our own `sendmsg` /
    /// `recvmsg` on its descriptor.
    socket: UnixDatagram,
    /// By token: what arrived (`None`: a refusal), and when.
    pending: Mutex<HashMap<u64, (Option<OwnedFd>, Instant)>>,
    arrived: Notify,
    /// The peer closed its end (the sandbox is gone).
    closed: AtomicBool,
}

impl Handoff {
    fn new(socket: OwnedFd) -> io::Result<Arc<Self>> {
        rustix::io::ioctl_fionbio(&socket, true)?;
        let socket = UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(socket))?;
        Ok(Arc::new(Self {
            socket,
            pending: Mutex::default(),
            arrived: Notify::new(),
            closed: AtomicBool::new(false),
        }))
    }

    /// The host end, receiving (the front door's): app connections and
    /// refusals are parked for [`Handoff::take`] until the peer closes it.
    /// Must be called inside a tokio runtime.
    pub fn start(socket: OwnedFd) -> io::Result<Arc<Self>> {
        let this = Self::new(socket)?;
        this.receive_all(Side::Host, None);
        Ok(this)
    }

    /// The agent's end: descriptors the host sends are parked; requests for
    /// an app connection come out of the receiver, token by token.
    pub fn start_agent(socket: OwnedFd) -> io::Result<(Arc<Self>, mpsc::Receiver<u64>)> {
        let this = Self::new(socket)?;
        let (tx, rx) = mpsc::channel(MAX_QUEUED_REQUESTS);
        this.receive_all(Side::Agent, Some(tx));
        Ok((this, rx))
    }

    /// The host end, sending only (the supervisor's copy, for egress): it
    /// never receives, so what the agent sends reaches the front door.
    pub fn sender(socket: OwnedFd) -> io::Result<Arc<Self>> {
        Self::new(socket)
    }

    fn receive_all(self: &Arc<Self>, side: Side, requests: Option<mpsc::Sender<u64>>) {
        let receiver = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(me) = receiver.upgrade() else {
                    return;
                };
                let got = me
                    .socket
                    .async_io(Interest::READABLE, || receive(me.socket.as_fd()))
                    .await;
                match (got, side, &requests) {
                    (Ok(Some((token, None))), Side::Agent, Some(requests)) => {
                        let _ = requests.try_send(token);
                    }
                    (Ok(Some((token, fd))), _, _) => me.park(token, fd),
                    (Ok(None), _, _) => {}
                    (Err(_), _, _) => {
                        // The peer is gone: wake whoever waits.
                        me.closed.store(true, Ordering::Release);
                        me.arrived.notify_waiters();
                        return;
                    }
                }
            }
        });
    }

    fn park(&self, token: u64, fd: Option<OwnedFd>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        pending.retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_FOR);
        if pending.len() < MAX_PENDING {
            pending.insert(token, (fd, now));
        }
        drop(pending);
        self.arrived.notify_waiters();
    }

    /// Whether the peer closed its end (seen by a receiving end only).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `fd` under `token`, waiting while the peer's queue is full.
    pub async fn send(&self, token: u64, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.socket
            .async_io(Interest::WRITABLE, || {
                send(self.socket.as_fd(), token, Some(fd))
            })
            .await
    }

    /// Sends `fd` under `token` only if that needs no waiting.
    pub fn try_send(&self, token: u64, fd: BorrowedFd<'_>) -> io::Result<()> {
        send(self.socket.as_fd(), token, Some(fd))
    }

    /// Sends `token` alone: from the host, a request for an app connection;
    /// from the agent, the answer that none could be made.
    pub async fn send_token(&self, token: u64) -> io::Result<()> {
        self.socket
            .async_io(Interest::WRITABLE, || {
                send(self.socket.as_fd(), token, None)
            })
            .await
    }

    /// The descriptor sent under `token`, waiting up to `wait` for it;
    /// `None` at once if the peer refused it or closed its end.
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
                return fd;
            }
            if self.is_closed() || tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }
}

fn send(socket: BorrowedFd<'_>, token: u64, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other("ancillary buffer too small"));
        }
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
#[allow(clippy::type_complexity)]
fn receive(socket: BorrowedFd<'_>) -> io::Result<Option<(u64, Option<OwnedFd>)>> {
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
    let flags = got.flags;
    if got.bytes != 8
        || fds.len() > 1
        || flags.contains(rustix::net::ReturnFlags::TRUNC)
        || flags.contains(rustix::net::ReturnFlags::CTRUNC)
    {
        return Ok(None);
    }
    Ok(Some((u64::from_be_bytes(token), fds.pop())))
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
        // A short token with a descriptor, then a token with two.
        let (x, _y) = std::os::unix::net::UnixStream::pair().unwrap();
        let send_raw = |bytes: &[u8], fds: &[BorrowedFd<'_>]| {
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
            rustix::net::sendmsg(
                &a,
                &[io::IoSlice::new(bytes)],
                &mut control,
                SendFlags::empty(),
            )
            .unwrap();
        };
        send_raw(&[0, 0, 9], &[x.as_fd()]);
        send_raw(&9u64.to_be_bytes(), &[x.as_fd(), x.as_fd()]);
        assert!(b.take(9, Duration::from_millis(200)).await.is_none());
        // The socket still works afterwards.
        let a = Handoff::sender(a).unwrap();
        a.send(10, x.as_fd()).await.unwrap();
        assert!(b.take(10, Duration::from_secs(5)).await.is_some());
    }

    #[tokio::test]
    async fn the_agent_is_asked_and_a_refusal_ends_the_wait_at_once() {
        let (host, agent) = pair();
        let host = Handoff::start(host).unwrap();
        let (agent, mut requests) = Handoff::start_agent(agent).unwrap();
        host.send_token(5).await.unwrap();
        assert_eq!(requests.recv().await, Some(5));
        agent.send_token(5).await.unwrap();
        let asked = std::time::Instant::now();
        assert!(host.take(5, Duration::from_secs(5)).await.is_none());
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "refused, not timed out"
        );
        // A connection the agent makes comes across; egress descriptors the
        // host sends are parked on the agent's side, not taken for requests.
        let (x, _y) = std::os::unix::net::UnixStream::pair().unwrap();
        agent.send(6, x.as_fd()).await.unwrap();
        assert!(host.take(6, Duration::from_secs(5)).await.is_some());
        host.send(7, x.as_fd()).await.unwrap();
        assert!(agent.take(7, Duration::from_secs(5)).await.is_some());
        // The agent gone (its process ends, closing its end): the host end
        // says so, and waits end.
        let (host, agent) = pair();
        let host = Handoff::start(host).unwrap();
        drop(agent);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !host.is_closed() {
            assert!(std::time::Instant::now() < deadline, "closed not seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(host.take(8, Duration::from_secs(5)).await.is_none());
    }
}
