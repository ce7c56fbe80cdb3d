//! Notices when the multiplexer gives up on the peer.
//!
//! When yamux sees a protocol violation (a frame beyond the granted window,
//! a bad stream id, ...) it sends the peer a GoAway frame with an error code
//! and then waits for the peer to hang up, which a hostile peer never does.
//! This transport wrapper follows the frame boundaries of what yamux writes
//! and reports such a GoAway, so that the session ends at once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

const HEADER_LEN: usize = 12;
const TYPE_DATA: u8 = 0;
const TYPE_GO_AWAY: u8 = 3;

/// Follows yamux frame boundaries in a byte stream.
#[derive(Debug, Default)]
struct FrameTracker {
    header: [u8; HEADER_LEN],
    filled: usize,
    body_left: u64,
}

impl FrameTracker {
    /// Feeds written bytes; returns the error code of a GoAway that ends
    /// the connection with an error, if one completed in `bytes`.
    fn feed(&mut self, mut bytes: &[u8]) -> Option<u32> {
        let mut found = None;
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(bytes.len() as u64) as usize;
                self.body_left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (HEADER_LEN - self.filled).min(bytes.len());
            self.header[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == HEADER_LEN {
                self.filled = 0;
                let len = u32::from_be_bytes([self.header[8], self.header[9], self.header[10], self.header[11]]);
                match self.header[1] {
                    TYPE_DATA => self.body_left = u64::from(len),
                    // For GoAway the length field is the code; 0 is a normal close.
                    TYPE_GO_AWAY if len != 0 => found = Some(len),
                    _ => {}
                }
            }
        }
        found
    }
}

/// The transport under yamux, with its writes watched.
#[derive(Debug)]
pub(crate) struct TermWatch<T> {
    inner: T,
    tracker: FrameTracker,
    report: mpsc::UnboundedSender<String>,
}

impl<T> TermWatch<T> {
    pub(crate) fn new(inner: T, report: mpsc::UnboundedSender<String>) -> Self {
        Self {
            inner,
            tracker: FrameTracker::default(),
            report,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TermWatch<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TermWatch<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            if let Some(code) = this.tracker.feed(&buf[..n]) {
                let what = match code {
                    1 => "protocol error",
                    2 => "internal error",
                    _ => "error",
                };
                let _ = this.report.send(format!("multiplexer: peer violated the protocol ({what}, code {code})"));
            }
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, len: u32) -> Vec<u8> {
        let mut h = vec![0, kind, 0, 0, 0, 0, 0, 1];
        h.extend_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn finds_error_go_away_across_split_writes() {
        let mut bytes = header(TYPE_DATA, 5);
        bytes.extend_from_slice(&[TYPE_GO_AWAY; 5]); // body bytes that look like headers
        bytes.extend(header(1, 0));
        bytes.extend(header(TYPE_GO_AWAY, 1));
        let mut t = FrameTracker::default();
        let mut found = None;
        for chunk in bytes.chunks(3) {
            found = found.or(t.feed(chunk));
        }
        assert_eq!(found, Some(1));
    }

    #[test]
    fn normal_go_away_is_not_an_error() {
        let mut t = FrameTracker::default();
        assert_eq!(t.feed(&header(TYPE_GO_AWAY, 0)), None);
    }
}
