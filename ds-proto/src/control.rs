//! Control messages: the typed conversation between host and agent.
//!
//! On the control stream every message is a frame of a 4-byte big-endian
//! length (at most [`MAX_CONTROL_MESSAGE_LEN`], checked before allocating)
//! followed by that many bytes of JSON.

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::{Deserialize, Serialize};

use crate::error::ProtoError;

/// Largest control message body accepted or sent.
pub const MAX_CONTROL_MESSAGE_LEN: usize = 64 * 1024;

/// A message on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlMessage {
    /// Agent to host: the app accepts connections; inbound streams may flow.
    Ready {
        /// The port the app listens on inside the sandbox.
        app_port: u16,
    },
    /// Host to agent: stop the app, giving it `grace_ms` before SIGKILL.
    Stop {
        /// Milliseconds between SIGTERM and SIGKILL.
        grace_ms: u64,
    },
    /// Host to agent: please send [`ControlMessage::Stats`].
    StatsRequest,
    /// Agent to host: counters the agent keeps.
    Stats(AgentStats),
    /// Either way: answered by the library itself with `Pong`.
    Ping {
        /// Echoed back in the pong.
        nonce: u64,
    },
    /// The answer to `Ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
}

/// Counters the agent reports in [`ControlMessage::Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStats {
    /// Inbound HTTP streams open now.
    pub http_streams_open: u64,
    /// Inbound HTTP streams since the agent started.
    pub http_streams_total: u64,
    /// Egress streams the agent opened since it started.
    pub egress_streams_total: u64,
    /// Times the app process was (re)started by the agent.
    pub app_starts: u64,
    /// System calls the sandbox's seccomp filter refused (counted ones).
    #[serde(default)]
    pub seccomp_denials: u64,
}

/// Encodes one framed control message.
pub fn encode(msg: &ControlMessage) -> Result<Vec<u8>, ProtoError> {
    let body = serde_json::to_vec(msg).map_err(|e| ProtoError::BadControlMessage(e.to_string()))?;
    if body.len() > MAX_CONTROL_MESSAGE_LEN {
        return Err(ProtoError::BadControlMessage(format!(
            "message of {} bytes exceeds the {MAX_CONTROL_MESSAGE_LEN}-byte limit",
            body.len()
        )));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes one control message.
pub(crate) async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &ControlMessage,
) -> Result<(), ProtoError> {
    w.write_all(&encode(msg)?).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one control message; `Ok(None)` on a clean end of stream between
/// messages.
pub(crate) async fn read<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<ControlMessage>, ProtoError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(ProtoError::BadControlMessage(
                    "stream ended inside a length prefix".into(),
                ))
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_CONTROL_MESSAGE_LEN {
        return Err(ProtoError::BadControlMessage(format!(
            "length {len} exceeds the {MAX_CONTROL_MESSAGE_LEN}-byte limit"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtoError::BadControlMessage("stream ended inside a message".into())
        } else {
            ProtoError::Io(e)
        }
    })?;
    decode_body(&body).map(Some)
}

/// Decodes a control message body (no length prefix).
pub fn decode_body(body: &[u8]) -> Result<ControlMessage, ProtoError> {
    serde_json::from_slice(body).map_err(|e| ProtoError::BadControlMessage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_messages() -> Vec<ControlMessage> {
        vec![
            ControlMessage::Ready { app_port: 8080 },
            ControlMessage::Stop { grace_ms: 5000 },
            ControlMessage::StatsRequest,
            ControlMessage::Stats(AgentStats {
                http_streams_open: 1,
                http_streams_total: 2,
                egress_streams_total: 3,
                app_starts: 4,
                seccomp_denials: 5,
            }),
            ControlMessage::Ping { nonce: 9 },
            ControlMessage::Pong { nonce: 9 },
        ]
    }

    #[test]
    fn messages_round_trip() {
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            for m in all_messages() {
                write(&mut buf, &m).await.unwrap();
            }
            let mut r = &buf[..];
            for m in all_messages() {
                assert_eq!(read(&mut r).await.unwrap(), Some(m));
            }
            assert_eq!(read(&mut r).await.unwrap(), None);
        });
    }

    #[test]
    fn malformed_messages_are_errors() {
        futures::executor::block_on(async {
            let frame = |body: &[u8]| {
                let mut f = (body.len() as u32).to_be_bytes().to_vec();
                f.extend_from_slice(body);
                f
            };
            let oversized = (MAX_CONTROL_MESSAGE_LEN as u32 + 1).to_be_bytes().to_vec();
            let huge = u32::MAX.to_be_bytes().to_vec();
            let cases: Vec<Vec<u8>> = vec![
                vec![0, 0],                                        // truncated length
                vec![0, 0, 0, 10, b'{'],                           // truncated body
                oversized,                                         // over the limit
                huge,                                              // 4 GiB claim, nothing allocated
                frame(b"not json"),                                // not JSON
                frame(b"{\"type\":\"launch_missiles\"}"),          // unknown type
                frame(b"{\"type\":\"ready\"}"),                    // missing field
                frame(b"{\"type\":\"ready\",\"app_port\":70000}"), // out of range
                frame(b"{\"type\":\"ping\",\"nonce\":1,\"x\":2}"), // unknown field
                frame(&[0xff, 0xfe]),                              // not UTF-8
            ];
            for case in cases {
                assert!(
                    read(&mut &case[..]).await.is_err(),
                    "{case:?} should be refused"
                );
            }
        });
    }
}
