//! Round trips, concurrency, flow control, close/reset and connection loss.

mod common;

use std::time::Duration;

use common::*;
use ds_proto::{AgentStats, ControlMessage, Destination, Incoming, ProtoError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn http_stream_round_trip() {
    let (host, agent) = pair().await;
    let _agent = spawn_agent_echo(agent);
    let mut stream = host.handle().open_http().await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n";
    assert_eq!(exchange(&mut stream, request).await, request);
}

#[tokio::test]
async fn large_transfer_is_intact() {
    let (host, agent) = pair().await;
    let _agent = spawn_agent_echo(agent);
    let payload: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut stream = host.handle().open_http().await.unwrap();
    assert!(exchange(&mut stream, &payload).await == payload);
}

#[tokio::test]
async fn egress_accept_and_deny() {
    let (host, agent) = pair().await;
    let agent = agent.handle();
    let host_task = tokio::spawn(async move {
        for _ in 0..2 {
            let Incoming::Egress(req) = host.accept().await.unwrap() else {
                panic!()
            };
            if req.destination().host == "allowed.example" {
                assert_eq!(req.destination().port, 443);
                let mut s = req.accept().await.unwrap();
                s.write_all(b"hello from upstream").await.unwrap();
                s.shutdown().await.unwrap();
            } else {
                req.deny("evil.example is not on this appspace's allowlist")
                    .await
                    .unwrap();
            }
        }
        host
    });
    let ok = agent
        .open_egress(Destination::parse("allowed.example:443").unwrap())
        .await
        .unwrap();
    let mut ok = ok.expect("allowed");
    let mut got = String::new();
    ok.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "hello from upstream");

    let denied = agent
        .open_egress(Destination::parse("evil.example:80").unwrap())
        .await
        .unwrap();
    assert_eq!(
        denied.unwrap_err(),
        "evil.example is not on this appspace's allowlist"
    );
    host_task.await.unwrap();
}

#[tokio::test]
async fn a_handed_off_egress_stream_is_a_lifeline_with_its_token() {
    let (host, agent) = pair().await;
    let host_task = tokio::spawn(async move {
        let Incoming::Egress(req) = host.accept().await.unwrap() else {
            panic!("expected an egress stream");
        };
        let mut lifeline = req.hand_off(42).await.unwrap();
        assert_eq!(lifeline.handoff_token(), Some(42));
        let mut report = Vec::new();
        lifeline.read_to_end(&mut report).await.unwrap();
        (host, report)
    });
    let mut lifeline = agent
        .handle()
        .open_egress(Destination::parse("bulk.example:443").unwrap())
        .await
        .unwrap()
        .expect("allowed");
    assert_eq!(lifeline.handoff_token(), Some(42));
    lifeline.write_all(&[7u8; 16]).await.unwrap();
    lifeline.shutdown().await.unwrap();
    let (_host, report) = host_task.await.unwrap();
    assert_eq!(report, [7u8; 16]);
}

#[tokio::test]
async fn roles_are_enforced_locally() {
    let (host, agent) = pair().await;
    let dest = Destination::parse("a.example:80").unwrap();
    assert!(matches!(
        host.handle().open_egress(dest).await,
        Err(ProtoError::Violation(_))
    ));
    assert!(matches!(
        agent.handle().open_http().await,
        Err(ProtoError::Violation(_))
    ));
}

#[tokio::test]
async fn control_messages_flow_both_ways() {
    let (host, agent) = pair().await;
    agent
        .handle()
        .send_control(ControlMessage::Ready { app_port: 8080 })
        .await
        .unwrap();
    assert_eq!(
        host.recv_control().await.unwrap(),
        ControlMessage::Ready { app_port: 8080 }
    );

    host.handle()
        .send_control(ControlMessage::StatsRequest)
        .await
        .unwrap();
    assert_eq!(
        agent.recv_control().await.unwrap(),
        ControlMessage::StatsRequest
    );
    let stats = AgentStats {
        http_streams_total: 3,
        ..AgentStats::default()
    };
    agent
        .handle()
        .send_control(ControlMessage::Stats(stats.clone()))
        .await
        .unwrap();
    assert_eq!(
        host.recv_control().await.unwrap(),
        ControlMessage::Stats(stats)
    );

    // Pings are answered by the library on either side.
    let rtt = host.handle().ping().await.unwrap();
    assert!(rtt < Duration::from_secs(1));
    agent.handle().ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_streams_each_way() {
    let (host, agent) = pair().await;
    let host_h = host.handle();
    let agent_h = agent.handle();
    // Each side both serves the other's streams and opens its own.
    let agent_server = tokio::spawn(async move {
        let mut served = 0;
        while let Ok(Incoming::Http(mut s)) = agent.accept().await {
            served += 1;
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(&mut s);
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
            if served == 1000 {
                break;
            }
        }
        (agent, served)
    });
    let host_server = tokio::spawn(async move {
        let mut served = 0;
        while let Ok(Incoming::Egress(req)) = host.accept().await {
            served += 1;
            tokio::spawn(async move {
                let mut s = req.accept().await.unwrap();
                let (mut r, mut w) = tokio::io::split(&mut s);
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
            if served == 1000 {
                break;
            }
        }
        (host, served)
    });

    // Open all 2,000 first, then talk on all of them at once.
    let mut inbound = Vec::new();
    let mut outbound = Vec::new();
    for i in 0..1000u32 {
        let h = host_h.clone();
        let a = agent_h.clone();
        inbound.push(tokio::spawn(async move {
            let mut s = h.open_http().await.unwrap();
            let msg = format!("inbound {i} ").repeat(100);
            assert_eq!(exchange(&mut s, msg.as_bytes()).await, msg.as_bytes());
        }));
        outbound.push(tokio::spawn(async move {
            let dest = Destination::parse(&format!("host{i}.example:443")).unwrap();
            let mut s = a.open_egress(dest).await.unwrap().unwrap();
            let msg = format!("egress {i} ").repeat(100);
            assert_eq!(exchange(&mut s, msg.as_bytes()).await, msg.as_bytes());
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        for t in inbound.into_iter().chain(outbound) {
            t.await.unwrap();
        }
    });
    all.await
        .expect("2,000 concurrent streams finished in time");
    assert_eq!(agent_server.await.unwrap().1, 1000);
    assert_eq!(host_server.await.unwrap().1, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_blocks_only_its_writer() {
    let (host, agent) = pair().await;
    let h = host.handle();
    // The agent accepts the first stream and never reads it; it echoes the rest.
    let (stalled_tx, stalled_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok(Incoming::Http(stalled)) = agent.accept().await else {
            panic!()
        };
        stalled_tx.send(stalled).unwrap();
        while let Ok(Incoming::Http(mut s)) = agent.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(&mut s);
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    });
    let mut stuck = h.open_http().await.unwrap();
    let _keep_unread = stalled_rx.await.unwrap();

    // Push as much as the stream will take within a second.
    let chunk = vec![0xabu8; 64 * 1024];
    let mut accepted = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(res) = tokio::time::timeout_at(deadline, stuck.write(&chunk)).await {
        accepted += res.unwrap();
        assert!(
            accepted <= 4 * 1024 * 1024,
            "writer was allowed to buffer {accepted} bytes"
        );
    }
    // yamux grants 256 KiB of credit per stream; the writer stops there.
    // (256 KiB of credit less the stream's one-byte opening.)
    assert!(accepted >= 255 * 1024, "accepted only {accepted} bytes");
    assert!(
        accepted <= 512 * 1024,
        "flow control let {accepted} bytes through"
    );

    // Meanwhile other streams are not held up by the stalled one.
    for _ in 0..20 {
        let mut s = h.open_http().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), exchange(&mut s, &[7u8; 100_000]))
            .await
            .expect("other streams keep flowing");
        assert_eq!(got.len(), 100_000);
    }
}

#[tokio::test]
async fn half_close_keeps_the_other_direction_open() {
    let (host, agent) = pair().await;
    let h = host.handle();
    let agent_task = tokio::spawn(async move {
        let Ok(Incoming::Http(mut s)) = agent.accept().await else {
            panic!()
        };
        let mut req = Vec::new();
        s.read_to_end(&mut req).await.unwrap(); // host half-closed
                                                // Answer after the host's FIN: our direction still works.
        s.write_all(&req).await.unwrap();
        s.write_all(b" and more").await.unwrap();
        s.shutdown().await.unwrap();
        agent
    });
    let mut s = h.open_http().await.unwrap();
    s.write_all(b"request").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = String::new();
    s.read_to_string(&mut back).await.unwrap();
    assert_eq!(back, "request and more");
    agent_task.await.unwrap();
}

#[tokio::test]
async fn reset_is_an_error_not_an_end() {
    let (host, agent) = pair().await;
    let h = host.handle();
    // The agent resets its stream once the host has read what it sent.
    let (read_tx, read_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let Ok(Incoming::Http(mut s)) = agent.accept().await else {
            panic!()
        };
        s.write_all(b"partial").await.unwrap();
        s.flush().await.unwrap();
        let _ = read_rx.await;
        s.reset();
        // Keep the session alive: only the stream is reset.
        let _ = agent.accept().await;
    });
    let mut s = h.open_http().await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut got = vec![0u8; 7];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(got, b"partial");
    read_tx.send(()).unwrap();
    let mut rest = Vec::new();
    let err = s.read_to_end(&mut rest).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(rest.is_empty());
    // Writing to a reset stream fails as well (at once, or once the write
    // reaches the reset state: polled, not slept for).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        if s.write_all(b"more").await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes to a reset stream kept succeeding"
        );
        tokio::task::yield_now().await;
    }
    // And the session itself is fine.
    assert!(!h.is_closed());
}

#[tokio::test]
async fn connection_loss_reaches_every_stream_and_call() {
    let (host, agent) = pair().await;
    let h = host.handle();
    let (streams_tx, streams_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..3 {
            let Ok(Incoming::Http(mut s)) = agent.accept().await else {
                panic!()
            };
            s.write_all(b"hi").await.unwrap();
            held.push(s);
        }
        streams_tx.send((agent, held)).unwrap();
    });
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = h.open_http().await.unwrap();
        let mut hi = [0u8; 2];
        s.read_exact(&mut hi).await.unwrap();
        open.push(s);
    }
    // Simulate the sandbox dying: drop the agent's whole session.
    let (agent, held) = streams_rx.await.unwrap();
    drop(held);
    drop(agent);

    let reason = tokio::time::timeout(Duration::from_secs(5), h.closed())
        .await
        .unwrap();
    assert!(!reason.is_empty());
    for mut s in open {
        let mut rest = Vec::new();
        let err = s.read_to_end(&mut rest).await.unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{err}"
        );
    }
    assert!(h.open_http().await.is_err());
    assert!(host.accept().await.is_err());
    assert!(host.recv_control().await.is_err());
    assert!(h.ping().await.is_err());
}

#[tokio::test]
async fn local_close_fails_open_streams() {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let agent = tokio::spawn(async move {
        let s = ds_proto::Session::connect(b, ds_proto::Role::Agent, Default::default())
            .await
            .unwrap();
        // Keep the agent up (leaked) so that only our local close can end the stream.
        std::mem::forget(s);
    });
    let host = ds_proto::Session::connect(a, ds_proto::Role::Host, Default::default())
        .await
        .unwrap();
    agent.await.unwrap();
    let h = host.handle();
    let mut s = h.open_http().await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    // Nobody will answer; closing our side must still end the stream.
    h.close();
    let mut buf = Vec::new();
    assert!(s.read_to_end(&mut buf).await.is_err());
    assert!(h.closed().await.contains("closed locally"));
}

#[tokio::test]
async fn dropping_every_handle_closes_the_channel() {
    let (host, agent) = pair().await;
    drop(host);
    let err = tokio::time::timeout(Duration::from_secs(5), agent.accept())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ProtoError::Closed { .. }), "{err}");
}
