//! Errors surfaced by the channel.

use std::io;

/// Everything that can go wrong on a ds-proto channel.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The peer did not finish the version handshake in time.
    #[error("ds-proto handshake timed out after {0:?} waiting for the peer's hello")]
    HandshakeTimeout(std::time::Duration),
    /// The peer's first bytes were not a ds-proto hello.
    #[error("peer is not speaking ds-proto (bad magic {0:02x?})")]
    BadMagic([u8; 8]),
    /// The peer speaks a protocol version we do not.
    #[error("peer speaks ds-proto version {theirs}, this side speaks version {ours}")]
    VersionMismatch {
        /// Our version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
    /// Both sides claimed the same role, or the role byte was invalid.
    #[error("invalid peer role in hello: {0}")]
    BadRole(String),
    /// The channel closed while the handshake was in progress.
    #[error("channel closed during the handshake")]
    ClosedDuringHandshake,
    /// The underlying socket failed (this includes a peer that tried to pass
    /// file descriptors or other ancillary data, which is refused).
    #[error("channel socket: {0}")]
    Io(#[from] io::Error),
    /// The multiplexer reported a protocol violation or connection failure.
    #[error("multiplexer: {0}")]
    Mux(String),
    /// The channel is closed; `reason` says why if known.
    #[error("channel closed: {reason}")]
    Closed {
        /// Why the channel closed.
        reason: String,
    },
    /// A stream's opening header was malformed.
    #[error("malformed stream header: {0}")]
    BadStreamHeader(String),
    /// A control message could not be decoded.
    #[error("malformed control message: {0}")]
    BadControlMessage(String),
    /// The peer did something its role may not (for example an agent
    /// opening an inbound-HTTP stream).
    #[error("protocol violation: {0}")]
    Violation(String),
    /// An egress destination was not a valid `host:port`.
    #[error("invalid egress destination {dest:?}: {why}")]
    BadDestination {
        /// What was given.
        dest: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl ProtoError {
    pub(crate) fn closed(reason: impl Into<String>) -> Self {
        Self::Closed {
            reason: reason.into(),
        }
    }
}

impl From<yamux::ConnectionError> for ProtoError {
    fn from(e: yamux::ConnectionError) -> Self {
        match e {
            yamux::ConnectionError::Io(io) => Self::Io(io),
            yamux::ConnectionError::Closed => Self::closed("closed by the peer"),
            other => Self::Mux(other.to_string()),
        }
    }
}
