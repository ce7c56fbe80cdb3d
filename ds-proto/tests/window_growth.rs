//! A stream whose reader first keeps up (so that its window may have grown
//! out of `Config::window_growth`) and then stalls still stops its writer:
//! at most 256 KiB plus the growth budget gets past flow control.

mod common;

use std::time::Duration;

use ds_proto::{Config, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEPT_UP: usize = 256 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stalls_after_keeping_up_bounds_its_writer() {
    let config = Config::default();
    let budget = 256 * 1024 + config.window_growth;
    let (host, agent) = common::pair_with(config).await;
    let (stalled_tx, stalled_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let Ok(Incoming::Http(mut s)) = agent.accept().await else {
            panic!("no stream")
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut read = 0;
        while read < KEPT_UP {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "early end");
            read += n;
        }
        stalled_tx.send(read).unwrap();
        // Stalled from here on, with the stream open.
        (agent, s)
    });

    let mut w = host.handle().open_http().await.unwrap();
    let chunk = vec![0x5au8; 256 * 1024];
    let mut written = 0usize;
    // Keep writing until the reader has had its fill...
    let mut stalled_rx = stalled_rx;
    let read = loop {
        tokio::select! {
            r = w.write(&chunk) => written += r.unwrap(),
            read = &mut stalled_rx => break read.unwrap(),
        }
    };
    // ...then for two more seconds; flow control must stop us.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, w.write(&chunk)).await {
        written += n;
    }
    let _held = reader.await.unwrap();
    // The opening byte of the stream counts against the credit too.
    let past = written + 1 - read;
    eprintln!("{past} bytes written beyond what the reader read (budget {budget})");
    assert!(
        past <= budget,
        "{past} bytes got past flow control (budget {budget})"
    );
    w.shutdown().await.ok();
}
