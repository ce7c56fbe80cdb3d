//! Every class of malformed or hostile input must end in a clear error:
//! never a panic, a hang or an unbounded allocation.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ds_proto::{wire, Config, ProtoError, Role, Session};

const SYN: u16 = 1;
const DATA: u8 = 0;
const WINDOW_UPDATE: u8 = 1;

/// One yamux frame header (version 0), as a raw peer would write it.
fn frame(kind: u8, flags: u16, stream: u32, len: u32) -> Vec<u8> {
    let mut f = vec![0u8, kind];
    f.extend_from_slice(&flags.to_be_bytes());
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(&len.to_be_bytes());
    f
}

fn data(flags: u16, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = frame(DATA, flags, stream, payload.len() as u32);
    f.extend_from_slice(payload);
    f
}

fn quick() -> Config {
    Config {
        handshake_timeout: Duration::from_millis(300),
        stream_header_timeout: Duration::from_millis(300),
        ..Config::default()
    }
}

/// A raw peer socket fed from a thread (so large writes never block the
/// test's runtime) that drains whatever the real side writes.
struct RawPeer {
    sock: UnixStream,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl RawPeer {
    fn start(sock: UnixStream, bytes: Vec<u8>, then_close: bool) -> Self {
        let mut writer = sock.try_clone().unwrap();
        let mut reader = sock.try_clone().unwrap();
        let write = std::thread::spawn(move || {
            let _ = writer.write_all(&bytes);
            if then_close {
                let _ = writer.shutdown(std::net::Shutdown::Write);
            }
        });
        let drain = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        });
        Self {
            sock,
            threads: vec![write, drain],
        }
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// Starts a real host session against a raw agent that sends `preamble`.
async fn host_against(preamble: Vec<u8>) -> (Result<Session, ProtoError>, RawPeer) {
    let (host_sock, raw) = UnixStream::pair().unwrap();
    let raw = RawPeer::start(raw, preamble, false);
    let session = Session::connect(host_sock, Role::Host, quick()).await;
    (session, raw)
}

/// A host session whose raw agent completed the handshake and then sends
/// `bytes` (then half-closes if `then_close`); returns why the host's
/// channel ended. The channel may already fail while the host is still
/// opening its control stream: that error names the reason too.
async fn host_ends(bytes: Vec<u8>, then_close: bool) -> String {
    let mut preamble = wire::hello(Role::Agent, wire::PROTOCOL_VERSION).to_vec();
    preamble.extend_from_slice(&bytes);
    let (host_sock, raw) = UnixStream::pair().unwrap();
    let _raw = RawPeer::start(raw, preamble, then_close);
    let session = match Session::connect(host_sock, Role::Host, quick()).await {
        Ok(session) => session,
        Err(e) => return e.to_string(),
    };
    tokio::time::timeout(Duration::from_secs(5), session.handle().closed())
        .await
        .expect("host ended the channel instead of hanging")
}

async fn host_ends_after(bytes: Vec<u8>) -> String {
    host_ends(bytes, false).await
}

#[tokio::test]
async fn not_ds_proto_at_all() {
    let (res, _raw) = host_against(b"GET / HTTP/1.1\r\n\r\n".to_vec()).await;
    let err = res.unwrap_err();
    assert!(matches!(err, ProtoError::BadMagic(_)), "{err}");
    assert!(err.to_string().contains("not speaking ds-proto"));
}

#[tokio::test]
async fn other_protocol_version() {
    let (res, _raw) = host_against(wire::hello(Role::Agent, 99).to_vec()).await;
    let err = res.unwrap_err();
    assert_eq!(
        err.to_string(),
        "peer speaks ds-proto version 99, this side speaks version 1"
    );
}

#[tokio::test]
async fn two_hosts() {
    let (res, _raw) = host_against(wire::hello(Role::Host, wire::PROTOCOL_VERSION).to_vec()).await;
    assert!(matches!(res.unwrap_err(), ProtoError::BadRole(_)));
}

#[tokio::test]
async fn unknown_role_byte() {
    let mut hello = wire::hello(Role::Agent, wire::PROTOCOL_VERSION);
    hello[10] = 77;
    let (res, _raw) = host_against(hello.to_vec()).await;
    assert!(matches!(res.unwrap_err(), ProtoError::BadRole(_)));
}

#[tokio::test]
async fn truncated_hello_then_close() {
    let (host_sock, mut raw) = UnixStream::pair().unwrap();
    raw.write_all(&wire::hello(Role::Agent, 1)[..7]).unwrap();
    drop(raw);
    let err = Session::connect(host_sock, Role::Host, quick())
        .await
        .unwrap_err();
    assert!(matches!(err, ProtoError::ClosedDuringHandshake), "{err}");
}

#[tokio::test]
async fn silent_peer_times_out() {
    let (res, _raw) = host_against(Vec::new()).await;
    let err = res.unwrap_err();
    assert!(matches!(err, ProtoError::HandshakeTimeout(_)), "{err}");
}

#[tokio::test]
async fn bad_multiplexer_version() {
    let mut f = data(SYN, 2, b"\x02");
    f[0] = 7;
    let reason = host_ends_after(f).await;
    assert!(reason.contains("multiplexer"), "{reason}");
}

#[tokio::test]
async fn unknown_frame_type() {
    let reason = host_ends_after(frame(9, 0, 0, 0)).await;
    assert!(reason.contains("multiplexer"), "{reason}");
}

#[tokio::test]
async fn oversized_frame_is_refused_before_allocation() {
    // A 4 GiB data frame header: refused from the header alone.
    let reason = host_ends_after(frame(DATA, SYN, 2, u32::MAX)).await;
    assert!(reason.contains("too large"), "{reason}");
}

#[tokio::test]
async fn frame_beyond_the_granted_window() {
    // 300 KiB on a new stream exceeds the 256 KiB initial credit.
    let reason = host_ends_after(data(SYN, 2, &vec![2u8; 300 * 1024])).await;
    assert!(reason.contains("multiplexer"), "{reason}");
}

#[tokio::test]
async fn truncated_frame_then_close() {
    let mut f = data(SYN, 2, &[3u8; 100]);
    f.truncate(50);
    let reason = host_ends(f, true).await;
    assert!(!reason.is_empty());
}

#[tokio::test]
async fn garbage_after_handshake() {
    let reason = host_ends_after((0..200u8).map(|b| b.wrapping_mul(37)).collect()).await;
    assert!(!reason.is_empty());
}

#[tokio::test]
async fn agent_may_not_open_http_streams() {
    let reason = host_ends_after(data(SYN, 2, &[2])).await;
    assert!(
        reason.contains("protocol violation") || reason.contains("protocol error"),
        "{reason}"
    );
}

#[tokio::test]
async fn agent_may_not_open_a_control_stream() {
    let reason = host_ends_after(data(SYN, 2, &[1])).await;
    assert!(reason.contains("protocol error"), "{reason}");
}

#[tokio::test]
async fn unknown_stream_kind() {
    let reason = host_ends_after(data(SYN, 2, &[42])).await;
    assert!(reason.contains("unknown stream kind 42"), "{reason}");
}

#[tokio::test]
async fn stream_that_never_says_what_it_is() {
    // SYN with no bytes: the header timeout ends it.
    let reason = host_ends_after(frame(WINDOW_UPDATE, SYN, 2, 0)).await;
    assert!(reason.contains("no stream header"), "{reason}");
}

#[tokio::test]
async fn malformed_egress_destinations() {
    for dest in [
        &b"no-port"[..],
        b"a b:80",
        b"x:99999",
        b"\xff\xfe:80",
        b"user@host:80",
    ] {
        let mut payload = vec![3u8];
        payload.extend_from_slice(&(dest.len() as u16).to_be_bytes());
        payload.extend_from_slice(dest);
        let reason = host_ends_after(data(SYN, 2, &payload)).await;
        assert!(reason.contains("protocol error"), "{dest:?}: {reason}");
    }
    // A length beyond the maximum is refused from the length alone.
    let reason = host_ends_after(data(SYN, 2, &[3, 0xff, 0xff])).await;
    assert!(reason.contains("outside 1..="), "{reason}");
}

/// A raw host against a real agent: the control stream carries garbage.
async fn agent_ends_after_control(payload: Vec<u8>) -> String {
    let (agent_sock, mut raw) = UnixStream::pair().unwrap();
    raw.write_all(&wire::hello(Role::Host, wire::PROTOCOL_VERSION))
        .unwrap();
    let mut opening = vec![1u8]; // control stream
    opening.extend_from_slice(&payload);
    raw.write_all(&data(SYN, 1, &opening)).unwrap();
    let agent = Session::connect(agent_sock, Role::Agent, quick())
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), agent.handle().closed())
        .await
        .expect("agent ended the channel");
    drop(raw);
    reason
}

#[tokio::test]
async fn oversized_control_message() {
    let reason = agent_ends_after_control(u32::MAX.to_be_bytes().to_vec()).await;
    assert!(reason.contains("exceeds"), "{reason}");
}

#[tokio::test]
async fn control_message_that_is_not_json() {
    let mut m = 4u32.to_be_bytes().to_vec();
    m.extend_from_slice(b"\x00\x01\x02\x03");
    let reason = agent_ends_after_control(m).await;
    assert!(reason.contains("malformed control message"), "{reason}");
}

#[tokio::test]
async fn control_message_of_unknown_type() {
    let body = br#"{"type":"format_disk"}"#;
    let mut m = (body.len() as u32).to_be_bytes().to_vec();
    m.extend_from_slice(body);
    let reason = agent_ends_after_control(m).await;
    assert!(reason.contains("malformed control message"), "{reason}");
}

#[tokio::test]
async fn file_descriptors_are_never_accepted() {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::AsFd;

    // A file with a unique name, so we can look for it among our own fds.
    let path = std::env::temp_dir().join(format!("ds-proto-fd-canary-{}", std::process::id()));
    let canary = std::fs::File::create(&path).unwrap();

    let (host_sock, raw) = UnixStream::pair().unwrap();
    (&raw)
        .write_all(&wire::hello(Role::Agent, wire::PROTOCOL_VERSION))
        .unwrap();
    let host = Session::connect(host_sock, Role::Host, quick())
        .await
        .unwrap();

    let fds = [canary.as_fd()];
    let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let payload = data(SYN, 2, &[2]);
    rustix::net::sendmsg(
        &raw,
        &[std::io::IoSlice::new(&payload)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();

    let reason = tokio::time::timeout(Duration::from_secs(5), host.handle().closed())
        .await
        .unwrap();
    assert!(reason.contains("ancillary data"), "{reason}");

    // The canary is open exactly once in this process: our own handle.
    let open_copies = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter(|target| target == &path)
        .count();
    assert_eq!(open_copies, 1, "a passed descriptor was installed");
    drop(canary);
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn abrupt_socket_loss_fails_open_streams() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A real host and a real agent, but the agent's socket is closed from
    // under it (as when the sandbox is killed).
    let (host_sock, agent_sock) = UnixStream::pair().unwrap();
    let agent_fd = agent_sock.try_clone().unwrap();
    let (host, agent) = tokio::join!(
        Session::connect(host_sock, Role::Host, quick()),
        Session::connect(agent_sock, Role::Agent, quick())
    );
    let (host, agent) = (host.unwrap(), agent.unwrap());
    let h = host.handle();
    let mut s = h.open_http().await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let _inbound = agent.accept().await.unwrap();
    agent_fd.shutdown(std::net::Shutdown::Both).unwrap();

    let mut rest = Vec::new();
    let err = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{err}"
    );
    assert!(h.is_closed());
}

#[tokio::test]
async fn overflowing_stream_credit() {
    // Found by the fuzzer: yamux adds 256 KiB to this credit unchecked.
    let reason = host_ends_after(frame(WINDOW_UPDATE, SYN, 2, u32::MAX)).await;
    assert!(reason.contains("overflowing credit"), "{reason}");
}
