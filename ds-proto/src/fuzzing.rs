//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`).

use std::time::Duration;

use futures::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::{Config, ControlMessage, Incoming, Role, Session};

/// Feeds `input` to a real session as everything its peer ever sends.
///
/// The first byte picks the side under test (even: host, odd: agent) and
/// whether a valid hello is prepended (bit 1), so that the fuzzer reaches
/// the multiplexer and stream decoding without having to discover the hello.
pub fn drive_session_with_input(input: &[u8]) {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    let role = if selector & 1 == 0 {
        Role::Host
    } else {
        Role::Agent
    };
    let mut peer_bytes = Vec::with_capacity(rest.len() + crate::HELLO_LEN);
    if selector & 2 == 0 {
        peer_bytes.extend_from_slice(&crate::handshake::encode_hello(
            role.peer(),
            crate::PROTOCOL_VERSION,
        ));
    }
    peer_bytes.extend_from_slice(rest);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("building a current-thread runtime");
    runtime.block_on(async move {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let feed = tokio::spawn(async move {
            let _ = theirs.write_all(&peer_bytes).await;
            let _ = theirs.shutdown().await;
            // Swallow whatever the session writes until it hangs up.
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut sink).await;
        });
        let config = Config {
            handshake_timeout: Duration::from_millis(100),
            stream_header_timeout: Duration::from_millis(100),
            ..Config::default()
        };
        if let Ok(session) = Session::over(ours.compat(), role, config).await {
            let handle = session.handle();
            let serve = async {
                loop {
                    tokio::select! {
                        incoming = session.accept() => match incoming {
                            Ok(Incoming::Http(stream)) => {
                                let mut stream = tokio_util::compat::TokioAsyncReadCompatExt::compat(stream);
                                let mut sink = Vec::new();
                                let _ = stream.read_to_end(&mut sink).await;
                            }
                            Ok(Incoming::Egress(req)) => {
                                let _ = req.deny("fuzzing").await;
                            }
                            Err(_) => break,
                        },
                        msg = session.recv_control() => match msg {
                            Ok(ControlMessage::StatsRequest) => {
                                let _ = handle.send_control(ControlMessage::Stats(Default::default())).await;
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        },
                    }
                }
            };
            // Time is paused: this advances instantly once everything idles.
            let _ = tokio::time::timeout(Duration::from_secs(30), serve).await;
        }
        feed.abort();
    });
}

/// Decodes one control message body and one destination from `input`.
pub fn decode_small_messages(input: &[u8]) {
    let _ = crate::control::decode_body(input);
    if let Ok(text) = std::str::from_utf8(input) {
        if let Ok(dest) = crate::Destination::parse(text) {
            // Whatever parses must print back to something that parses the same.
            assert_eq!(
                crate::Destination::parse(&dest.to_string()).ok(),
                Some(dest)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sample_inputs_do_not_panic() {
        for input in [
            &b""[..],
            b"\x00",
            b"\x01",
            b"\x02garbage",
            b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x01\x02",
        ] {
            super::drive_session_with_input(input);
            super::decode_small_messages(input);
        }
    }
}
