//! DNS answers are parsed here, in the confined front door, never in the
//! root supervisor (docs/privsep.md). For each egress name the supervisor
//! does not know from `/etc/hosts`, it makes a fresh UDP socket connected
//! to a nameserver from `/etc/resolv.conf` (a new random source port per
//! lookup) and hands it over with the name (`Resolve`); the front door
//! sends the A and AAAA questions on it, reads the answers with
//! hickory-proto and sends back only the addresses (`Resolved`). The front
//! door still makes no socket and reaches no other address: the socket is
//! connected, so the kernel delivers it only the nameserver's datagrams.
//!
//! An answer counts only if it is a response with our random id, to our
//! one question (name, type and class), neither truncated nor an error;
//! its A/AAAA records count only under the asked name or a name the
//! answer's own CNAME chain leads to from it. The supervisor checks every
//! address against the appspace's allowlist and the SSRF rules, as before.

use std::collections::HashSet;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

/// How long the nameserver has to answer both questions.
pub const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// Largest answer read over UDP (EDNS is not offered: 512 bytes is the
/// classic limit, and a longer answer comes truncated, to be asked again
/// over TCP).
const MAX_ANSWER: usize = 4096;

/// What [`resolve`] says when a UDP answer was truncated: the supervisor
/// asks again over TCP (RFC 7766), where answers are whole.
pub const TRUNCATED: &str = "the nameserver's answer was truncated";

/// How the nameserver socket carries messages.
enum Transport {
    /// One message per datagram.
    Udp(tokio::net::UdpSocket),
    /// Each message after its two-byte length (RFC 1035 4.2.2).
    Tcp(tokio::net::TcpStream),
}

impl Transport {
    async fn send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            Transport::Udp(s) => s.send(msg).await.map(drop),
            Transport::Tcp(s) => {
                let len = u16::try_from(msg.len()).map_err(std::io::Error::other)?;
                let mut framed = len.to_be_bytes().to_vec();
                framed.extend_from_slice(msg);
                s.write_all(&framed).await
            }
        }
    }

    /// The next message into `buf`; its length.
    async fn recv(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        match self {
            Transport::Udp(s) => {
                buf.resize(MAX_ANSWER, 0);
                s.recv(buf).await
            }
            Transport::Tcp(s) => {
                let mut len = [0u8; 2];
                s.read_exact(&mut len).await?;
                let len = u16::from_be_bytes(len) as usize;
                buf.resize(len, 0);
                s.read_exact(&mut buf[..len]).await?;
                Ok(len)
            }
        }
    }
}

/// Looks `name` up on `socket` (a UDP socket connected to a nameserver,
/// or a TCP connection to one when `stream`): its IPv4 and IPv6
/// addresses, or why there are none.
pub async fn resolve(socket: OwnedFd, name: &str, stream: bool) -> Result<Vec<IpAddr>, String> {
    let broken = |e: std::io::Error| format!("the nameserver socket: {e}");
    let mut transport = if stream {
        let socket = std::net::TcpStream::from(socket);
        socket.set_nonblocking(true).map_err(broken)?;
        Transport::Tcp(tokio::net::TcpStream::from_std(socket).map_err(broken)?)
    } else {
        let socket = std::net::UdpSocket::from(socket);
        socket.set_nonblocking(true).map_err(broken)?;
        Transport::Udp(tokio::net::UdpSocket::from_std(socket).map_err(broken)?)
    };
    let qname = Name::from_ascii(name)
        .map_err(|e| format!("{name}: not a domain name: {e}"))?
        .to_lowercase();
    let mut qname = qname;
    qname.set_fqdn(true);
    let mut pending = Vec::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(qname.clone(), rtype));
        let bytes = query.to_vec().map_err(|e| format!("{name}: {e}"))?;
        transport
            .send(&bytes)
            .await
            .map_err(|e| format!("asking the nameserver: {e}"))?;
        pending.push((query.metadata.id, rtype));
    }
    let mut addrs = Vec::new();
    let mut errors = Vec::new();
    let mut buf = Vec::new();
    let answered = tokio::time::timeout(ANSWER_WAIT, async {
        while !pending.is_empty() {
            let n = match transport.recv(&mut buf).await {
                Ok(n) => n,
                // An ICMP error (nothing listens), a closed connection: no
                // answer will come.
                Err(e) => return Err(format!("the nameserver: {e}")),
            };
            let Ok(answer) = Message::from_vec(&buf[..n]) else {
                continue; // not DNS: ignored, as a stray datagram
            };
            let Some(i) = pending
                .iter()
                .position(|(id, rtype)| is_answer_to(&answer, *id, &qname, *rtype))
            else {
                continue;
            };
            let (_, rtype) = pending.swap_remove(i);
            match addresses(&answer, &qname, rtype) {
                Ok(found) => addrs.extend(found),
                Err(e) => errors.push(e),
            }
        }
        Ok(())
    })
    .await;
    match answered {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) if addrs.is_empty() => {
            return Err(format!(
                "{name}: the nameserver did not answer within {ANSWER_WAIT:?}"
            ))
        }
        Err(_) => {}
    }
    // A truncated answer may hide addresses: over UDP, it is asked again
    // over TCP even when the other question had some.
    if let Some(tc) = errors.iter().find(|e| e.contains(TRUNCATED)) {
        return Err(tc.clone());
    }
    if addrs.is_empty() {
        return Err(errors
            .into_iter()
            .next()
            .unwrap_or_else(|| format!("{name} has no address")));
    }
    Ok(addrs)
}

/// Whether `msg` answers our question `id` for (`qname`, `rtype`).
fn is_answer_to(msg: &Message, id: u16, qname: &Name, rtype: RecordType) -> bool {
    msg.metadata.id == id
        && msg.metadata.message_type == MessageType::Response
        && msg.metadata.op_code == OpCode::Query
        && msg.queries.len() == 1
        && msg.queries[0].name().to_lowercase() == *qname
        && msg.queries[0].query_type() == rtype
        && msg.queries[0].query_class() == DNSClass::IN
}

/// The addresses an answer gives for `qname` (following its CNAMEs).
fn addresses(msg: &Message, qname: &Name, rtype: RecordType) -> Result<Vec<IpAddr>, String> {
    if msg.metadata.truncation {
        return Err(format!("{qname}: {TRUNCATED}"));
    }
    match msg.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Err(format!("{qname}: no such name")),
        code => return Err(format!("{qname}: the nameserver answered {code}")),
    }
    // The names that lead to the asked one, through the answer's CNAMEs
    // (each followed once: a loop ends).
    let mut names: HashSet<Name> = HashSet::from([qname.clone()]);
    loop {
        let before = names.len();
        for r in &msg.answers {
            if let RData::CNAME(target) = &r.data {
                if r.dns_class == DNSClass::IN && names.contains(&r.name.to_lowercase()) {
                    names.insert(target.0.to_lowercase());
                }
            }
        }
        if names.len() == before {
            break;
        }
    }
    Ok(msg
        .answers
        .iter()
        .filter(|r| r.dns_class == DNSClass::IN && names.contains(&r.name.to_lowercase()))
        .filter_map(|r| match (&r.data, rtype) {
            (RData::A(a), RecordType::A) => Some(IpAddr::V4(a.0)),
            (RData::AAAA(a), RecordType::AAAA) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::Record;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn answer_to(id: u16, q: &str, rtype: RecordType, records: Vec<Record>) -> Message {
        let mut m = Message::response(id, OpCode::Query);
        m.add_query(Query::query(name(q), rtype));
        for r in records {
            m.add_answer(r);
        }
        m
    }

    #[test]
    fn only_our_question_is_answered_and_only_its_chain_counts() {
        let q = name("www.example.org.");
        let records = vec![
            Record::from_rdata(q.clone(), 60, RData::CNAME(CNAME(name("Edge.CDN.net.")))),
            Record::from_rdata(
                name("edge.cdn.net."),
                60,
                RData::A(A([192, 0, 2, 1].into())),
            ),
            // Not on the chain: an answer smuggling another name's address.
            Record::from_rdata(
                name("bank.example."),
                60,
                RData::A(A([198, 51, 100, 9].into())),
            ),
            // The other family than asked.
            Record::from_rdata(
                q.clone(),
                60,
                RData::AAAA(AAAA("2001:db8::1".parse().unwrap())),
            ),
        ];
        let msg = answer_to(7, "WWW.example.org.", RecordType::A, records);
        assert!(is_answer_to(&msg, 7, &q, RecordType::A));
        assert!(!is_answer_to(&msg, 8, &q, RecordType::A), "another id");
        assert!(!is_answer_to(&msg, 7, &q, RecordType::AAAA), "another type");
        assert!(!is_answer_to(&msg, 7, &name("example.org."), RecordType::A));
        let mut query = msg.clone();
        query.metadata.message_type = MessageType::Query;
        assert!(
            !is_answer_to(&query, 7, &q, RecordType::A),
            "not a response"
        );
        assert_eq!(
            addresses(&msg, &q, RecordType::A).unwrap(),
            vec![IpAddr::from([192, 0, 2, 1])]
        );
    }

    #[test]
    fn errors_and_truncation_are_no_addresses() {
        let q = name("x.test.");
        let mut nx = answer_to(1, "x.test.", RecordType::A, vec![]);
        nx.metadata.response_code = ResponseCode::NXDomain;
        assert!(addresses(&nx, &q, RecordType::A)
            .unwrap_err()
            .contains("no such name"));
        let mut fail = answer_to(1, "x.test.", RecordType::A, vec![]);
        fail.metadata.response_code = ResponseCode::ServFail;
        assert!(addresses(&fail, &q, RecordType::A).is_err());
        let mut tc = answer_to(
            1,
            "x.test.",
            RecordType::A,
            vec![Record::from_rdata(
                q.clone(),
                60,
                RData::A(A([192, 0, 2, 2].into())),
            )],
        );
        tc.metadata.truncation = true;
        assert!(addresses(&tc, &q, RecordType::A)
            .unwrap_err()
            .contains("truncated"));
        // A CNAME loop ends, with no address.
        let looped = answer_to(
            1,
            "x.test.",
            RecordType::A,
            vec![
                Record::from_rdata(q.clone(), 60, RData::CNAME(CNAME(name("y.test.")))),
                Record::from_rdata(name("y.test."), 60, RData::CNAME(CNAME(q.clone()))),
            ],
        );
        assert!(addresses(&looped, &q, RecordType::A).unwrap().is_empty());
    }
}
