//! The version handshake that precedes multiplexing.
//!
//! Each side writes a fixed 16-byte hello and reads the peer's, within a
//! timeout, before a single multiplexer frame is exchanged:
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"ds-proto"
//! 8       2     protocol version, big endian
//! 10      1     role: 1 = host, 2 = agent
//! 11      5     reserved, zero
//! ```

use std::time::Duration;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ProtoError;

/// The magic bytes every hello starts with.
pub const MAGIC: [u8; 8] = *b"ds-proto";
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Length of the hello on the wire.
pub const HELLO_LEN: usize = 16;

/// Which end of the channel this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `ds-host`: opens inbound-HTTP streams and the control stream.
    Host,
    /// The agent inside the sandbox: opens egress streams.
    Agent,
}

impl Role {
    fn to_byte(self) -> u8 {
        match self {
            Role::Host => 1,
            Role::Agent => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Role::Host),
            2 => Some(Role::Agent),
            _ => None,
        }
    }

    /// The role the peer must have.
    pub fn peer(self) -> Self {
        match self {
            Role::Host => Role::Agent,
            Role::Agent => Role::Host,
        }
    }
}

pub(crate) fn encode_hello(role: Role, version: u16) -> [u8; HELLO_LEN] {
    let mut hello = [0u8; HELLO_LEN];
    hello[..8].copy_from_slice(&MAGIC);
    hello[8..10].copy_from_slice(&version.to_be_bytes());
    hello[10] = role.to_byte();
    hello
}

pub(crate) fn check_hello(hello: &[u8; HELLO_LEN], ours: Role) -> Result<(), ProtoError> {
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&hello[..8]);
    if magic != MAGIC {
        return Err(ProtoError::BadMagic(magic));
    }
    let theirs = u16::from_be_bytes([hello[8], hello[9]]);
    if theirs != PROTOCOL_VERSION {
        return Err(ProtoError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    match Role::from_byte(hello[10]) {
        Some(role) if role == ours.peer() => Ok(()),
        Some(role) => Err(ProtoError::BadRole(format!(
            "peer claims to be {role:?} too; a channel joins one host and one agent"
        ))),
        None => Err(ProtoError::BadRole(format!(
            "unknown role byte {}",
            hello[10]
        ))),
    }
}

/// Exchanges hellos on `io` and checks the peer's.
pub(crate) async fn exchange_hello<T>(
    io: &mut T,
    role: Role,
    timeout: Duration,
) -> Result<(), ProtoError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let gone = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
            ProtoError::ClosedDuringHandshake
        }
        _ => ProtoError::Io(e),
    };
    let exchange = async {
        io.write_all(&encode_hello(role, PROTOCOL_VERSION))
            .await
            .map_err(gone)?;
        io.flush().await.map_err(gone)?;
        let mut theirs = [0u8; HELLO_LEN];
        match io.read_exact(&mut theirs).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(ProtoError::ClosedDuringHandshake)
            }
            Err(e) => return Err(e.into()),
        }
        check_hello(&theirs, role)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProtoError::HandshakeTimeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips() {
        let hello = encode_hello(Role::Host, PROTOCOL_VERSION);
        check_hello(&hello, Role::Agent).unwrap();
    }

    #[test]
    fn wrong_version_is_named() {
        let hello = encode_hello(Role::Host, 7);
        let err = check_hello(&hello, Role::Agent).unwrap_err();
        assert!(err.to_string().contains("version 7"), "{err}");
    }

    #[test]
    fn same_role_is_refused() {
        let hello = encode_hello(Role::Agent, PROTOCOL_VERSION);
        assert!(matches!(
            check_hello(&hello, Role::Agent),
            Err(ProtoError::BadRole(_))
        ));
    }

    #[test]
    fn bad_magic_is_refused() {
        let mut hello = encode_hello(Role::Host, PROTOCOL_VERSION);
        hello[0] = b'X';
        assert!(matches!(
            check_hello(&hello, Role::Agent),
            Err(ProtoError::BadMagic(_))
        ));
    }
}
