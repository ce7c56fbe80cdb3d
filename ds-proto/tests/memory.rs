//! A slow reader must not make either side buffer without bound. This test
//! binary counts every heap byte so the bound is measured, not assumed.

mod common;

use std::time::Duration;

use ds_proto::Incoming;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::io::AsyncWriteExt;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes allocated and not yet freed since `region` began.
fn live_growth(region: &Region<std::alloc::System>) -> isize {
    let c = region.change();
    c.bytes_allocated as isize - c.bytes_deallocated as isize + c.bytes_reallocated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_keep_memory_bounded() {
    let (host, agent) = common::pair().await;
    let h = host.handle();
    // The agent accepts 16 streams and reads none of them.
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < 16 {
            let Ok(Incoming::Http(s)) = agent.accept().await else {
                panic!()
            };
            held.push(s);
        }
        held_tx.send((agent, held)).unwrap();
    });
    let mut writers = Vec::new();
    for _ in 0..16 {
        writers.push(h.open_http().await.unwrap());
    }
    let _held = held_rx.await.unwrap();
    let region = Region::new(GLOBAL);

    // Each writer tries to push 64 MiB (1 GiB in all) for two seconds.
    let chunk = vec![0x5au8; 256 * 1024];
    let mut pushed = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for mut w in writers {
        let chunk = chunk.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while n < 64 * 1024 * 1024 {
                match tokio::time::timeout_at(deadline, w.write(&chunk)).await {
                    Ok(Ok(k)) => n += k,
                    _ => break,
                }
            }
            (w, n)
        }));
    }
    let mut keep = Vec::new();
    for t in tasks {
        let (w, n) = t.await.unwrap();
        pushed += n;
        keep.push(w);
    }
    let grown = live_growth(&region);
    // 16 streams x 256 KiB of credit = 4 MiB may sit in the receiver's
    // buffers; allow the same again for frames in flight and bookkeeping.
    assert!(
        pushed <= 16 * 256 * 1024,
        "writers got {pushed} bytes past flow control"
    );
    assert!(
        grown < 10 * 1024 * 1024,
        "heap grew by {grown} bytes with stalled readers"
    );
    eprintln!("pushed {pushed} bytes, heap grew by {grown} bytes");
}
