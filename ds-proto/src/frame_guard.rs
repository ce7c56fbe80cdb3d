//! A guard between yamux and the socket, for two gaps in yamux 0.13:
//!
//! - On a protocol violation (a frame beyond the granted window, a bad
//!   stream id, ...) yamux sends the peer a GoAway frame with an error code
//!   and then waits for the peer to hang up, which a hostile peer never does.
//!   We follow the frames yamux writes and report such a GoAway, so that the
//!   session ends at once.
//! - A window-update frame that opens a stream (SYN) with a credit near
//!   `u32::MAX` overflows an addition inside yamux. We follow the frames we
//!   read and refuse that one before yamux sees it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

const HEADER_LEN: usize = 12;
const TYPE_DATA: u8 = 0;
const TYPE_WINDOW_UPDATE: u8 = 1;
const TYPE_GO_AWAY: u8 = 3;
const FLAG_SYN: u16 = 1;
/// yamux adds its 256 KiB default credit to a SYN window update's credit.
const MAX_SYN_CREDIT: u32 = u32::MAX - 256 * 1024;

/// A complete frame header, as far as the guard cares.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: u8,
    flags: u16,
    len: u32,
}

/// Follows yamux frame boundaries in a byte stream.
#[derive(Debug, Default)]
struct FrameTracker {
    header: [u8; HEADER_LEN],
    filled: usize,
    body_left: u64,
}

impl FrameTracker {
    /// Feeds bytes and calls `on_header` for every header completed in them.
    fn feed(&mut self, mut bytes: &[u8], mut on_header: impl FnMut(Header)) {
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
                let h = &self.header;
                let header = Header {
                    kind: h[1],
                    flags: u16::from_be_bytes([h[2], h[3]]),
                    len: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
                };
                if header.kind == TYPE_DATA {
                    self.body_left = u64::from(header.len);
                }
                on_header(header);
            }
        }
    }
}

/// The error code of a GoAway that ends the connection with an error
/// (for GoAway the length field is the code; 0 is a normal close).
fn error_go_away(h: Header) -> Option<u32> {
    (h.kind == TYPE_GO_AWAY && h.len != 0).then_some(h.len)
}

/// Whether an inbound header would overflow yamux's credit arithmetic.
fn overflowing_syn_credit(h: Header) -> bool {
    h.kind == TYPE_WINDOW_UPDATE && h.flags & FLAG_SYN != 0 && h.len > MAX_SYN_CREDIT
}

/// The transport under yamux, with its writes watched.
#[derive(Debug)]
pub(crate) struct FrameGuard<T> {
    inner: T,
    written: FrameTracker,
    read: FrameTracker,
    report: mpsc::UnboundedSender<String>,
}

impl<T> FrameGuard<T> {
    pub(crate) fn new(inner: T, report: mpsc::UnboundedSender<String>) -> Self {
        Self {
            inner,
            written: FrameTracker::default(),
            read: FrameTracker::default(),
            report,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FrameGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let mut bad = false;
        this.read
            .feed(&buf[..n], |h| bad |= overflowing_syn_credit(h));
        if bad {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "peer sent a stream-opening window update with an overflowing credit",
            )));
        }
        Poll::Ready(Ok(n))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FrameGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            let mut code = None;
            this.written
                .feed(&buf[..n], |h| code = code.or(error_go_away(h)));
            if let Some(code) = code {
                let what = match code {
                    1 => "protocol error",
                    2 => "internal error",
                    _ => "error",
                };
                let _ = this.report.send(format!(
                    "multiplexer: peer violated the protocol ({what}, code {code})"
                ));
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
            t.feed(chunk, |h| found = found.or(error_go_away(h)));
        }
        assert_eq!(found, Some(1));
    }

    #[test]
    fn normal_go_away_is_not_an_error() {
        let mut t = FrameTracker::default();
        t.feed(&header(TYPE_GO_AWAY, 0), |h| {
            assert_eq!(error_go_away(h), None)
        });
    }

    #[test]
    fn overflowing_syn_credit_is_spotted() {
        let mut h = header(TYPE_WINDOW_UPDATE, u32::MAX);
        h[3] = 1; // SYN
        let mut bad = false;
        FrameTracker::default().feed(&h, |h| bad |= overflowing_syn_credit(h));
        assert!(bad);
        let ok = header(TYPE_WINDOW_UPDATE, u32::MAX); // no SYN: yamux checks this itself
        FrameTracker::default().feed(&ok, |h| assert!(!overflowing_syn_credit(h)));
    }
}
