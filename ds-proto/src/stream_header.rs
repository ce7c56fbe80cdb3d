//! The few bytes that open every stream and say what it is for.
//!
//! ```text
//! stream opening:  kind u8  (1 = control, 2 = inbound HTTP, 3 = egress)
//!   egress only:   len u16 BE (1..=MAX_DESTINATION_LEN), "host:port" in ASCII
//! egress answer:   verdict u8 (0 = accept, 1 = deny)
//!   deny only:     len u16 BE (0..=MAX_REASON_LEN), reason in UTF-8
//! ```
//! After these bytes the stream carries the payload unchanged.

use std::fmt;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ProtoError;

/// Longest `host:port` an egress opening may carry (a 253-byte DNS name,
/// brackets and a port fit).
pub const MAX_DESTINATION_LEN: usize = 300;
/// Longest deny reason.
pub const MAX_REASON_LEN: usize = 1024;

const KIND_CONTROL: u8 = 1;
const KIND_HTTP: u8 = 2;
const KIND_EGRESS: u8 = 3;
const VERDICT_ACCEPT: u8 = 0;
const VERDICT_DENY: u8 = 1;
const VERDICT_HANDOFF: u8 = 2;

/// Where an egress stream wants to go, as the app asked (not yet resolved or
/// checked: that is the host's job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// A DNS name, an IPv4 literal, or an IPv6 literal without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Destination {
    /// Parses `host:port` or `[v6]:port`, refusing anything that is not a
    /// plain printable host name or literal.
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let bad = |why| ProtoError::BadDestination {
            dest: s.chars().take(80).collect(),
            why,
        };
        if s.len() > MAX_DESTINATION_LEN {
            return Err(bad("longer than the maximum"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or_else(|| bad("unterminated IPv6 literal"))?;
            if v6.is_empty()
                || !v6
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            {
                return Err(bad("invalid IPv6 literal"));
            }
            (v6, port)
        } else {
            let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
            if host.is_empty() || host.len() > 253 {
                return Err(bad("host name empty or too long"));
            }
            if !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            {
                return Err(bad("host name has characters outside [A-Za-z0-9._-]"));
            }
            (host, port)
        };
        if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad("port is not a decimal number"));
        }
        let port: u16 = port.parse().map_err(|_| bad("port out of range"))?;
        if port == 0 {
            return Err(bad("port 0"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a stream was opened for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Control,
    Http,
    Egress(Destination),
}

pub(crate) fn encode_opening(kind: &StreamKind) -> Vec<u8> {
    match kind {
        StreamKind::Control => vec![KIND_CONTROL],
        StreamKind::Http => vec![KIND_HTTP],
        StreamKind::Egress(dest) => {
            let text = dest.to_string();
            let mut out = Vec::with_capacity(3 + text.len());
            out.push(KIND_EGRESS);
            // Destination::parse/Display keep this under MAX_DESTINATION_LEN.
            out.extend_from_slice(&(text.len() as u16).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
            out
        }
    }
}

async fn read_u16<R: AsyncRead + Unpin>(r: &mut R) -> Result<u16, ProtoError> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await.map_err(truncated)?;
    Ok(u16::from_be_bytes(len))
}

fn truncated(e: std::io::Error) -> ProtoError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ProtoError::BadStreamHeader("stream ended inside its header".into())
    } else {
        ProtoError::Io(e)
    }
}

/// Reads a stream's opening bytes.
pub(crate) async fn read_opening<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<StreamKind, ProtoError> {
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind).await.map_err(truncated)?;
    match kind[0] {
        KIND_CONTROL => Ok(StreamKind::Control),
        KIND_HTTP => Ok(StreamKind::Http),
        KIND_EGRESS => {
            let len = usize::from(read_u16(r).await?);
            if len == 0 || len > MAX_DESTINATION_LEN {
                return Err(ProtoError::BadStreamHeader(format!(
                    "egress destination length {len} outside 1..={MAX_DESTINATION_LEN}"
                )));
            }
            let mut text = vec![0u8; len];
            r.read_exact(&mut text).await.map_err(truncated)?;
            let text = String::from_utf8(text).map_err(|_| {
                ProtoError::BadStreamHeader("egress destination is not UTF-8".into())
            })?;
            Ok(StreamKind::Egress(Destination::parse(&text)?))
        }
        other => Err(ProtoError::BadStreamHeader(format!(
            "unknown stream kind {other}"
        ))),
    }
}

/// Writes the host's answer to an egress opening.
pub(crate) async fn write_verdict<W: AsyncWrite + Unpin>(
    w: &mut W,
    verdict: Result<Option<u64>, &str>,
) -> Result<(), ProtoError> {
    match verdict {
        Ok(None) => w.write_all(&[VERDICT_ACCEPT]).await?,
        Ok(Some(token)) => {
            let mut out = [0u8; 9];
            out[0] = VERDICT_HANDOFF;
            out[1..].copy_from_slice(&token.to_be_bytes());
            w.write_all(&out).await?;
        }
        Err(reason) => {
            let reason = truncate_utf8(reason, MAX_REASON_LEN);
            let mut out = Vec::with_capacity(3 + reason.len());
            out.push(VERDICT_DENY);
            out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
            out.extend_from_slice(reason.as_bytes());
            w.write_all(&out).await?;
        }
    }
    w.flush().await?;
    Ok(())
}

/// Reads the host's answer to an egress opening: `Ok(Ok(None))` for
/// accept, `Ok(Ok(Some(token)))` for accept with the connection handed
/// off under `token`, `Ok(Err(reason))` for deny.
pub(crate) async fn read_verdict<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Result<Option<u64>, String>, ProtoError> {
    let mut verdict = [0u8; 1];
    r.read_exact(&mut verdict).await.map_err(truncated)?;
    match verdict[0] {
        VERDICT_ACCEPT => Ok(Ok(None)),
        VERDICT_HANDOFF => {
            let mut token = [0u8; 8];
            r.read_exact(&mut token).await.map_err(truncated)?;
            Ok(Ok(Some(u64::from_be_bytes(token))))
        }
        VERDICT_DENY => {
            let len = usize::from(read_u16(r).await?);
            if len > MAX_REASON_LEN {
                return Err(ProtoError::BadStreamHeader(format!(
                    "deny reason length {len} over {MAX_REASON_LEN}"
                )));
            }
            let mut text = vec![0u8; len];
            r.read_exact(&mut text).await.map_err(truncated)?;
            Ok(Err(String::from_utf8_lossy(&text).into_owned()))
        }
        other => Err(ProtoError::BadStreamHeader(format!(
            "unknown egress verdict {other}"
        ))),
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        assert_eq!(
            Destination::parse("example.com:443").unwrap(),
            Destination {
                host: "example.com".into(),
                port: 443
            }
        );
        assert_eq!(
            Destination::parse("[::1]:80").unwrap(),
            Destination {
                host: "::1".into(),
                port: 80
            }
        );
        assert_eq!(
            Destination::parse("[::1]:80").unwrap().to_string(),
            "[::1]:80"
        );
        for bad in [
            "",
            "example.com",
            "example.com:",
            ":80",
            "a b:80",
            "user@host:80",
            "host:99999",
            "host:0",
            "host:+80",
            "[::1:80",
            "[zz]:80",
            "host/path:80",
            "ho\0st:80",
        ] {
            assert!(
                Destination::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(Destination::parse(&format!("{}:80", "a".repeat(254))).is_err());
    }

    #[test]
    fn openings_round_trip() {
        futures::executor::block_on(async {
            for kind in [
                StreamKind::Control,
                StreamKind::Http,
                StreamKind::Egress(Destination::parse("api.example.org:8443").unwrap()),
            ] {
                let bytes = encode_opening(&kind);
                assert_eq!(read_opening(&mut &bytes[..]).await.unwrap(), kind);
            }
        });
    }

    #[test]
    fn malformed_openings_are_errors() {
        futures::executor::block_on(async {
            for bad in [
                &[][..],
                &[0][..],
                &[9][..],
                &[KIND_EGRESS][..],
                &[KIND_EGRESS, 0][..],
                &[KIND_EGRESS, 0, 0][..],
                &[KIND_EGRESS, 0xff, 0xff][..],
                &[KIND_EGRESS, 0, 5, b'a', b':'][..],
                &[KIND_EGRESS, 0, 4, 0xff, 0xfe, b':', b'1'][..],
            ] {
                assert!(
                    read_opening(&mut &bad[..]).await.is_err(),
                    "{bad:?} should be refused"
                );
            }
        });
    }

    #[test]
    fn verdicts_round_trip() {
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            write_verdict(&mut buf, Ok(None)).await.unwrap();
            write_verdict(&mut buf, Ok(Some(0x0102_0304_0506_0708)))
                .await
                .unwrap();
            write_verdict(&mut buf, Err("not on the allowlist"))
                .await
                .unwrap();
            let mut r = &buf[..];
            assert_eq!(read_verdict(&mut r).await.unwrap(), Ok(None));
            assert_eq!(
                read_verdict(&mut r).await.unwrap(),
                Ok(Some(0x0102_0304_0506_0708))
            );
            assert_eq!(
                read_verdict(&mut r).await.unwrap(),
                Err("not on the allowlist".to_owned())
            );
            assert!(read_verdict(&mut &[7u8][..]).await.is_err());
            assert!(read_verdict(&mut &[1u8, 0xff, 0xff][..]).await.is_err());
            // A handoff verdict cut short.
            assert!(read_verdict(&mut &[2u8, 1, 2, 3][..]).await.is_err());
        });
    }
}
