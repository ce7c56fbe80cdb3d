//! The raw channel socket: a Unix stream socket that refuses ancillary data.
//!
//! Reads go through `recvmsg` with no room for control messages. If the peer
//! attaches file descriptors (SCM_RIGHTS) or credentials, the kernel reports
//! `MSG_CTRUNC` and drops them without installing them in our process; we then
//! fail the read, so the whole channel closes with a clear error. A sandboxed
//! peer can never hand the host a descriptor.

use std::io;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use std::os::fd::AsFd;

use rustix::net::{RecvAncillaryBuffer, RecvFlags, ReturnFlags, SendFlags};
use tokio::io::Interest;

/// A non-blocking Unix stream socket usable as the multiplexer's transport.
#[derive(Debug)]
pub struct ChannelSocket {
    sock: tokio::net::UnixStream,
}

impl ChannelSocket {
    /// Wraps a connected Unix stream socket. Must be called inside a tokio
    /// runtime.
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            sock: tokio::net::UnixStream::from_std(stream)?,
        })
    }
}

/// Reads into `buf`, failing if the peer attached any ancillary data.
fn recv_refusing_ancillary(sock: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut no_control = RecvAncillaryBuffer::default();
    let msg = rustix::net::recvmsg(sock, &mut iov, &mut no_control, RecvFlags::CMSG_CLOEXEC)?;
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "peer sent ancillary data (file descriptors or credentials); refused",
        ));
    }
    Ok(msg.bytes)
}

impl futures::io::AsyncRead for ChannelSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.sock.poll_read_ready(cx))?;
            match self.sock.try_io(Interest::READABLE, || {
                recv_refusing_ancillary(&self.sock, buf)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

impl futures::io::AsyncWrite for ChannelSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.sock.poll_write_ready(cx))?;
            // MSG_NOSIGNAL: a vanished peer is an error here, never a SIGPIPE.
            match self.sock.try_io(Interest::WRITABLE, || {
                rustix::net::send(&self.sock, buf, SendFlags::NOSIGNAL).map_err(io::Error::from)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match rustix::net::shutdown(&self.sock, rustix::net::Shutdown::Write) {
            // Already gone is as closed as it gets.
            Ok(()) | Err(rustix::io::Errno::NOTCONN) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }
}
