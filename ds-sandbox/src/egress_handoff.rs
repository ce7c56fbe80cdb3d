//! Connected egress sockets the host hands the agent, so that a bulk
//! transfer does not pass through the host: they arrive on a dedicated
//! seqpacket socket (never the ds-proto channel, which refuses descriptors)
//! as an 8-byte token with one descriptor, and the proxy moves the data
//! between the app's connection and that socket with `splice(2)`.

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Most sockets received and not yet claimed (the host sends one per
/// accepted egress stream, which the proxy claims at once).
const MAX_PENDING: usize = 1024;
/// Bytes moved per splice call.
const SPLICE_CHUNK: usize = 1 << 20;

/// Sockets received from the host, by token.
#[derive(Debug, Default)]
pub struct Handoffs {
    pending: Mutex<HashMap<u64, OwnedFd>>,
    arrived: Notify,
}

impl Handoffs {
    /// Receives from `socket` (the host's handoff socket) until the host
    /// closes it.
    pub fn start(socket: OwnedFd) -> io::Result<Arc<Self>> {
        rustix::io::ioctl_fionbio(&socket, true)?;
        let socket = crate::sys::async_owned_fd(socket)?;
        let this = Arc::new(Self::default());
        let me = this.clone();
        tokio::spawn(async move {
            loop {
                let Ok(mut ready) = socket.readable().await else {
                    return;
                };
                match ready.try_io(|s| receive(s.get_ref())) {
                    Ok(Ok(Some((token, fd)))) => {
                        let mut pending = me.pending.lock().unwrap_or_else(|p| p.into_inner());
                        if pending.len() < MAX_PENDING {
                            pending.insert(token, fd);
                        }
                        drop(pending);
                        me.arrived.notify_waiters();
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(_)) => return, // the host is gone
                    Err(_would_block) => {}
                }
            }
        });
        Ok(this)
    }

    /// The socket sent under `token`, waiting up to `wait` for it.
    pub async fn take(&self, token: u64, wait: Duration) -> Option<OwnedFd> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.arrived.notified();
            if let Some(fd) = self
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

/// One message: `Ok(None)` for a malformed one (its descriptors dropped),
/// an error at the end of the stream.
fn receive(socket: &OwnedFd) -> io::Result<Option<(u64, OwnedFd)>> {
    let mut token = [0u8; 8];
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
    if got.bytes != 8 || fds.len() != 1 {
        return Ok(None);
    }
    Ok(fds.pop().map(|fd| (u64::from_be_bytes(token), fd)))
}

/// Moves bytes between `app` and `upstream` both ways with `splice(2)`
/// through a pipe per direction, passing half-closes on; returns the bytes
/// moved (app to upstream, upstream to app).
pub async fn splice_both(app: &TcpStream, upstream: &TcpStream) -> (u64, u64) {
    let (out, back) = tokio::join!(splice_one(app, upstream), splice_one(upstream, app));
    (out.unwrap_or(0), back.unwrap_or(0))
}

async fn splice_one(from: &TcpStream, to: &TcpStream) -> io::Result<u64> {
    let (pipe_r, pipe_w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    // A larger pipe moves more per call (the default holds 64 KiB); the
    // kernel may refuse (pipe-user-pages limits), which only costs speed.
    let _ = rustix::pipe::fcntl_setpipe_size(&pipe_w, SPLICE_CHUNK);
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let mut total = 0u64;
    let result = async {
        loop {
            // The pipe is empty here, so EAGAIN can only mean the socket.
            let n = from
                .async_io(Interest::READABLE, || {
                    rustix::pipe::splice(from.as_fd(), None, &pipe_w, None, SPLICE_CHUNK, flags)
                        .map_err(io::Error::from)
                })
                .await?;
            if n == 0 {
                return Ok(());
            }
            let mut left = n;
            while left > 0 {
                left -= to
                    .async_io(Interest::WRITABLE, || {
                        rustix::pipe::splice(&pipe_r, None, to.as_fd(), None, left, flags)
                            .map_err(io::Error::from)
                    })
                    .await?;
            }
            total += n as u64;
        }
    }
    .await;
    // Pass the end on (or, on an error, end both directions).
    let how = if result.is_ok() {
        rustix::net::Shutdown::Write
    } else {
        rustix::net::Shutdown::Both
    };
    let _ = rustix::net::shutdown(to.as_fd(), how);
    result.map(|()| total)
}
