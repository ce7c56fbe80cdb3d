//! The agent's egress proxy: the app's only way out. It listens on
//! `127.0.0.1:<proxy port>` inside the sandbox (the app's `HTTP_PROXY` and
//! `HTTPS_PROXY`) and turns each client connection into one egress stream
//! to the host, which decides. `CONNECT host:port` (HTTPS and any TCP)
//! becomes a tunnel; an absolute-form request (`GET http://host/path`) is
//! sent on in origin form with `Connection: close`, one request per
//! connection. A denial is a `403` whose body is the host's reason.
//!
//! The proxy parses only the request head (httparse), refuses anything
//! ambiguous (userinfo in the authority, non-`http` schemes, a second
//! Host), and never resolves a name: that is the host's job.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ds_proto::{Destination, SessionHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::egress_handoff::splice_both;
use ds_proto::Handoff;

/// How long the proxy waits for a handed-off socket after the verdict.
const HANDOFF_WAIT: Duration = Duration::from_secs(5);

/// Largest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;
/// Time the app has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers the proxy drops: they concern the proxy hop only.
const HOP_HEADERS: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
];

/// What the app asked for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    /// `CONNECT host:port`: a tunnel.
    Tunnel(Destination),
    /// An absolute-form HTTP request, rewritten for the origin.
    Forward(Destination, Vec<u8>),
}

/// Accepts app connections until the listener fails.
/// `handoffs` receives the connected sockets the host hands over (when it
/// offers that).
pub async fn serve(
    listener: TcpListener,
    host: SessionHandle,
    handoffs: Option<Arc<Handoff>>,
    opened: Arc<AtomicU64>,
) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let _ = conn.set_nodelay(true);
        let (host, opened, handoffs) = (host.clone(), opened.clone(), handoffs.clone());
        tokio::spawn(async move { handle(conn, host, handoffs, opened).await });
    }
}

async fn handle(
    mut conn: TcpStream,
    host: SessionHandle,
    handoffs: Option<Arc<Handoff>>,
    opened: Arc<AtomicU64>,
) {
    let (ask, rest) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut conn)).await {
        Ok(Ok((head, rest))) => match parse(&head) {
            Ok(ask) => (ask, rest),
            Err(why) => return refuse(&mut conn, "400 Bad Request", &why).await,
        },
        Ok(Err(why)) => return refuse(&mut conn, "400 Bad Request", &why).await,
        Err(_) => return refuse(&mut conn, "408 Request Timeout", "no request head in time").await,
    };
    let destination = match &ask {
        Ask::Tunnel(d) | Ask::Forward(d, _) => d.clone(),
    };
    opened.fetch_add(1, Ordering::Relaxed);
    let mut stream = match host.open_egress(destination.clone()).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(reason)) => {
            let msg = format!("egress to {destination} denied by the host: {reason}");
            return refuse(&mut conn, "403 Forbidden", &msg).await;
        }
        Err(e) => {
            let msg = format!("egress to {destination}: the host channel failed: {e}");
            return refuse(&mut conn, "502 Bad Gateway", &msg).await;
        }
    };
    if let Some(token) = stream.handoff_token() {
        let upstream = match &handoffs {
            Some(h) => h.take(token, HANDOFF_WAIT).await,
            None => None,
        };
        let Some(mut upstream) = upstream.and_then(|fd| {
            let std = std::net::TcpStream::from(fd);
            std.set_nonblocking(true).ok()?;
            TcpStream::from_std(std).ok()
        }) else {
            let msg = format!("egress to {destination}: the host's connection did not arrive");
            return refuse(&mut conn, "502 Bad Gateway", &msg).await;
        };
        let (sent, head_len) = match ask {
            Ask::Tunnel(_) => (
                conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_ok(),
                0,
            ),
            Ask::Forward(_, head) => (upstream.write_all(&head).await.is_ok(), head.len()),
        };
        let mut moved = (0, 0);
        if sent && (rest.is_empty() || upstream.write_all(&rest).await.is_ok()) {
            moved = splice_both(&conn, &upstream).await;
            moved.0 += (head_len + rest.len()) as u64;
        }
        // The lifeline: tell the host what moved, then let it go.
        let mut report = [0u8; 16];
        report[..8].copy_from_slice(&moved.0.to_be_bytes());
        report[8..].copy_from_slice(&moved.1.to_be_bytes());
        let _ = stream.write_all(&report).await;
        let _ = stream.shutdown().await;
        return;
    }
    let sent = match ask {
        Ask::Tunnel(_) => conn
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_ok(),
        Ask::Forward(_, head) => stream.write_all(&head).await.is_ok(),
    };
    if !sent || (!rest.is_empty() && stream.write_all(&rest).await.is_err()) {
        return;
    }
    let _ = tokio::io::copy_bidirectional_with_sizes(
        &mut conn,
        &mut stream,
        ds_proto::COPY_BUFFER,
        ds_proto::COPY_BUFFER,
    )
    .await;
    let _ = stream.shutdown().await;
}

/// Answers with `status` and `why` as the body, then closes.
async fn refuse(conn: &mut TcpStream, status: &str, why: &str) {
    let body = format!("{why}\n");
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nX-Ds-Egress: refused\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Reads up to the end of the request head; returns the head and whatever
/// came after it.
async fn read_head(conn: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the request: {e}"))?;
        if n == 0 {
            return Err("the connection closed before a complete request head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("request head larger than {MAX_HEAD} bytes"));
        }
    }
}

/// Splits an authority (`host[:port]`, `[v6][:port]`) into a destination,
/// refusing userinfo and anything [`Destination::parse`] refuses.
fn authority(text: &str, default_port: Option<u16>) -> Result<Destination, String> {
    if text.contains('@') {
        return Err(format!(
            "{text:?}: user information in the authority is refused"
        ));
    }
    let has_port = if text.starts_with('[') {
        text.contains("]:")
    } else {
        text.contains(':')
    };
    let full = match (has_port, default_port) {
        (true, _) => text.to_owned(),
        (false, Some(p)) => format!("{text}:{p}"),
        (false, None) => return Err(format!("{text:?}: CONNECT needs host:port")),
    };
    Destination::parse(&full).map_err(|e| e.to_string())
}

fn parse(head: &[u8]) -> Result<Ask, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete request head".into()),
        Err(e) => return Err(format!("malformed request head: {e}")),
    }
    let (method, target) = (req.method.unwrap_or(""), req.path.unwrap_or(""));
    if method.eq_ignore_ascii_case("CONNECT") {
        return Ok(Ask::Tunnel(authority(target, None)?));
    }
    let Some(after) = target.strip_prefix("http://").or_else(|| {
        target
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &target[7..])
    }) else {
        return Err(format!(
            "{target:?}: the proxy takes CONNECT host:port or an absolute http:// URL"
        ));
    };
    let (auth, path) = match after.find(['/', '?']) {
        Some(i) if after.as_bytes()[i] == b'/' => (&after[..i], &after[i..]),
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    let dest = authority(auth, Some(80))?;
    if req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count()
        > 1
    {
        return Err("more than one Host header".into());
    }
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    let mut has_host = false;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if HOP_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if name == "host" {
            has_host = true;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_host {
        out.extend_from_slice(format!("Host: {auth}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Ask::Forward(dest, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(host: &str, port: u16) -> Destination {
        Destination {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn connect_takes_host_and_port() {
        assert_eq!(
            parse(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
            Ok(Ask::Tunnel(dest("example.com", 443)))
        );
        assert_eq!(
            parse(b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n"),
            Ok(Ask::Tunnel(dest("2001:db8::1", 8443)))
        );
        assert!(parse(b"CONNECT example.com HTTP/1.1\r\n\r\n").is_err());
        assert!(parse(b"CONNECT user@example.com:443 HTTP/1.1\r\n\r\n").is_err());
        assert!(parse(b"CONNECT exa mple.com:443 HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn absolute_form_is_rewritten_for_the_origin() {
        let head = b"GET http://example.com:8080/a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: x\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n";
        let Ok(Ask::Forward(d, out)) = parse(head) else {
            panic!("not forwarded");
        };
        assert_eq!(d, dest("example.com", 8080));
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "GET /a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let Ok(Ask::Forward(d, out)) = parse(b"GET http://example.com HTTP/1.1\r\n\r\n") else {
            panic!("not forwarded");
        };
        assert_eq!(d, dest("example.com", 80));
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("GET / HTTP/1.1\r\nHost: example.com\r\n"));
    }

    #[test]
    fn ambiguous_requests_are_refused() {
        for head in [
            &b"GET http://allowed.com@evil.com/ HTTP/1.1\r\n\r\n"[..],
            b"GET https://example.com/ HTTP/1.1\r\n\r\n",
            b"GET /relative HTTP/1.1\r\nHost: example.com\r\n\r\n",
            b"GET ftp://example.com/ HTTP/1.1\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET http://exa\x01mple.com/ HTTP/1.1\r\n\r\n",
            b"GET http://example.com:99999/ HTTP/1.1\r\n\r\n",
            b"not http at all\r\n\r\n",
        ] {
            assert!(parse(head).is_err(), "{:?}", String::from_utf8_lossy(head));
        }
    }
}
