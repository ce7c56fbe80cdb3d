//! ds-proto: the channel between `ds-host` and the agent in a sandbox.
//!
//! One Unix stream socket per appspace carries multiplexed, bidirectional,
//! flow-controlled byte streams after a versioned hello:
//! - inbound HTTP streams, opened by the host ([`SessionHandle::open_http`]),
//! - egress streams, opened by the agent with a destination and answered
//!   by the host ([`SessionHandle::open_egress`], [`EgressRequest`]),
//! - one control stream of typed messages ([`ControlMessage`]).
//!
//! The multiplexer underneath (yamux) is an implementation detail; see
//! `docs/protocol.md` for the wire format and the reasons.

mod control;
mod error;
mod frame_guard;
mod handoff;
mod handshake;
mod session;
mod socket;
mod stream;
mod stream_header;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use control::{AgentStats, ControlMessage, MAX_CONTROL_MESSAGE_LEN};
pub use error::ProtoError;
pub use handoff::{Handoff, UNCLAIMED_FOR};
pub use handshake::{Role, HELLO_LEN, MAGIC, PROTOCOL_VERSION};
pub use session::{Config, EgressRequest, Incoming, Session, SessionHandle};
pub use socket::ChannelSocket;
pub use stream::ProtoStream;
pub use stream_header::{Destination, MAX_DESTINATION_LEN, MAX_REASON_LEN};

/// Buffer size for copying bulk data between a stream and a socket (egress):
/// large enough that a transfer moves in few, large frames (the default
/// 8 KiB of `tokio::io::copy` makes one frame, and one wake-up, per 8 KiB).
/// Inbound HTTP keeps the default: it is mostly small, and the agent's
/// memory per pooled connection counts against its budget.
pub const COPY_BUFFER: usize = 128 * 1024;

/// Low-level encoders, public so that tests and fuzzers can build raw,
/// possibly hostile, peers byte by byte.
pub mod wire {
    pub use crate::control::{decode_body as decode_control_body, encode as encode_control};
    pub use crate::handshake::PROTOCOL_VERSION;

    /// The 16-byte hello a peer in `role` sends, for `version`.
    pub fn hello(role: crate::Role, version: u16) -> [u8; crate::HELLO_LEN] {
        crate::handshake::encode_hello(role, version)
    }
}
