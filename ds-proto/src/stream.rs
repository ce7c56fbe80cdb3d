//! A multiplexed byte stream as seen by the host and the agent.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures::io::{AsyncRead as FuturesRead, AsyncWrite as FuturesWrite};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::session::Liveness;

/// One bidirectional byte stream of a channel (tokio `AsyncRead` +
/// `AsyncWrite`).
///
/// - `shutdown()` half-closes: the peer reads end-of-stream, and this side
///   can keep reading.
/// - Dropping it without `shutdown()` resets the stream: the peer's reads
///   fail with `ConnectionReset` and its writes fail.
/// - If the whole channel is lost, reads and writes fail with
///   `ConnectionReset`/`BrokenPipe` rather than looking like a clean end.
#[derive(Debug)]
pub struct ProtoStream {
    inner: yamux::Stream,
    liveness: Arc<Liveness>,
    write_closed: bool,
    handoff: Option<u64>,
}

impl ProtoStream {
    pub(crate) fn new(inner: yamux::Stream, liveness: Arc<Liveness>) -> Self {
        Self {
            inner,
            liveness,
            write_closed: false,
            handoff: None,
        }
    }

    pub(crate) fn with_handoff(mut self, token: u64) -> Self {
        self.handoff = Some(token);
        self
    }

    /// For an accepted egress stream whose connection the host handed off:
    /// the token under which the connected socket arrives on the handoff
    /// socket. The stream is then only a lifeline: the agent closes it when
    /// the connection is done, after writing the bytes it moved each way
    /// (two big-endian u64, out then in).
    pub fn handoff_token(&self) -> Option<u64> {
        self.handoff
    }

    /// Resets the stream: both directions end at once and the peer sees an
    /// error, not a clean end.
    pub fn reset(self) {
        drop(self);
    }

    /// The multiplexer's id of this stream (for logs).
    pub fn id(&self) -> u32 {
        self.inner.id().val()
    }

    /// A clean end of stream from the multiplexer is ambiguous: yamux reports
    /// a reset or a lost connection as EOF too. The peer's FIN alone leaves
    /// the stream half-open (we may still write), so "fully closed while we
    /// never closed our side" can only be a reset or a loss.
    fn classify_eof(&self) -> io::Result<()> {
        if self.liveness.is_lost() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("channel lost: {}", self.liveness.reason()),
            ));
        }
        if !self.write_closed && self.inner.is_closed() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "stream reset by the peer",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for ProtoStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let dst = buf.initialize_unfilled();
        if dst.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let n = ready!(Pin::new(&mut self.inner).poll_read(cx, dst))?;
        if n == 0 {
            self.classify_eof()?;
        }
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ProtoStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner)
            .poll_write(cx, buf)
            .map_err(|e| self.liveness.explain(e))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(|e| self.liveness.explain(e))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_closed = true;
        Pin::new(&mut self.inner)
            .poll_close(cx)
            .map_err(|e| self.liveness.explain(e))
    }
}
