//! ds-proto channel benchmark: bulk throughput (1 and 16 streams) and small
//! round-trip latency, each against plain socketpairs measured in the same
//! run. `cargo bench -p ds-proto --bench channel` prints a table and
//! rewrites its section of docs/performance.md.

#[path = "../../tests/support/perf_doc.rs"]
mod perf_doc;

use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::{Duration, Instant};

use ds_proto::{Config, Incoming, Role, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

const BULK_BYTES: usize = 1 << 30;
const CHUNK: usize = 256 * 1024;
/// Bulk measurements per path (best counts).
const BULK_ROUNDS: usize = 3;
const ROUND_TRIPS: usize = 20_000;
const MSG: usize = 64;

fn raw_pair() -> (UnixStream, UnixStream) {
    let (a, b) = StdUnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (
        UnixStream::from_std(a).unwrap(),
        UnixStream::from_std(b).unwrap(),
    )
}

async fn session_pair() -> (Session, Session) {
    let (a, b) = StdUnixStream::pair().unwrap();
    let (h, g) = tokio::join!(
        Session::connect(a, Role::Host, Config::default()),
        Session::connect(b, Role::Agent, Config::default())
    );
    (h.unwrap(), g.unwrap())
}

async fn pump<W: AsyncWrite + Unpin>(mut w: W, bytes: usize) {
    let chunk = vec![0x42u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK);
        w.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    w.shutdown().await.unwrap();
}

async fn drain<R: AsyncRead + Unpin>(mut r: R) -> usize {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return total;
        }
        total += n;
    }
}

/// Bytes per second over `streams` raw socketpairs in parallel.
async fn raw_bulk(streams: usize) -> f64 {
    let per = BULK_BYTES / streams;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (a, b) = raw_pair();
        tasks.push(tokio::spawn(pump(a, per)));
        tasks.push(tokio::spawn(async move {
            assert_eq!(drain(b).await, per);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    BULK_BYTES as f64 / start.elapsed().as_secs_f64()
}

/// Bytes per second over `streams` channel streams in parallel.
async fn mux_bulk(streams: usize) -> f64 {
    let (host, agent) = session_pair().await;
    let per = BULK_BYTES / streams;
    let readers = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let Ok(Incoming::Http(s)) = agent.accept().await else {
                panic!()
            };
            tasks.push(tokio::spawn(async move { assert_eq!(drain(s).await, per) }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let h = host.handle();
    let start = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..streams {
        let s = h.open_http().await.unwrap();
        writers.push(tokio::spawn(pump(s, per)));
    }
    for w in writers {
        w.await.unwrap();
    }
    readers.await.unwrap();
    BULK_BYTES as f64 / start.elapsed().as_secs_f64()
}

async fn echo_once<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, buf: &mut [u8; MSG]) {
    s.write_all(buf).await.unwrap();
    s.read_exact(buf).await.unwrap();
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

/// 64-byte request/response on one raw socketpair.
async fn raw_round_trip() -> (Duration, Duration) {
    let (mut a, mut b) = raw_pair();
    tokio::spawn(async move {
        let mut buf = [0u8; MSG];
        while b.read_exact(&mut buf).await.is_ok() {
            b.write_all(&buf).await.unwrap();
        }
    });
    let mut buf = [1u8; MSG];
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let t = Instant::now();
        echo_once(&mut a, &mut buf).await;
        samples.push(t.elapsed());
    }
    percentiles(samples)
}

/// 64-byte request/response on one long-lived channel stream, and with a
/// fresh stream per request (how inbound HTTP requests travel).
async fn mux_round_trip(fresh_stream_each: bool) -> (Duration, Duration) {
    let (host, agent) = session_pair().await;
    tokio::spawn(async move {
        while let Ok(Incoming::Http(mut s)) = agent.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; MSG];
                while s.read_exact(&mut buf).await.is_ok() {
                    s.write_all(&buf).await.unwrap();
                }
            });
        }
    });
    let h = host.handle();
    let mut buf = [1u8; MSG];
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    let mut long_lived = h.open_http().await.unwrap();
    for _ in 0..ROUND_TRIPS {
        let t = Instant::now();
        if fresh_stream_each {
            let mut s = h.open_http().await.unwrap();
            echo_once(&mut s, &mut buf).await;
            s.shutdown().await.unwrap();
        } else {
            echo_once(&mut long_lived, &mut buf).await;
        }
        samples.push(t.elapsed());
    }
    percentiles(samples)
}

fn gib_s(bps: f64) -> String {
    format!("{:.2} GiB/s", bps / (1u64 << 30) as f64)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm up both paths once.
        raw_bulk(1).await;
        mux_bulk(1).await;

        // Bulk rounds alternate between the two paths, so that the
        // machine's drift (other tenants, frequency) weighs on both alike;
        // the best of each counts.
        let (mut raw1, mut mux1, mut raw16, mut mux16) = (0f64, 0f64, 0f64, 0f64);
        for _ in 0..BULK_ROUNDS {
            raw1 = raw1.max(raw_bulk(1).await);
            mux1 = mux1.max(mux_bulk(1).await);
            raw16 = raw16.max(raw_bulk(16).await);
            mux16 = mux16.max(mux_bulk(16).await);
        }
        let (raw_p50, raw_p99) = raw_round_trip().await;
        let (mux_p50, mux_p99) = mux_round_trip(false).await;
        let (new_p50, new_p99) = mux_round_trip(true).await;

        let table = format!(
            "| what | ds-proto | plain socketpair(s) | ratio |\n\
             |---|---|---|---|\n\
             | bulk, 1 stream (1 GiB, best of {BULK_ROUNDS}) | {} | {} | {:.2}x |\n\
             | bulk, 16 parallel streams (1 GiB total, best of {BULK_ROUNDS}) vs 16 socketpairs | {} | {} | {:.2}x |\n\
             | 64-byte round trip on one stream, p50 / p99 | {} / {} | {} / {} | {:.2}x / {:.2}x |\n\
             | 64-byte round trip on a new stream each, p50 / p99 | {} / {} | {} / {} | {:.2}x / {:.2}x |\n",
            gib_s(mux1), gib_s(raw1), mux1 / raw1,
            gib_s(mux16), gib_s(raw16), mux16 / raw16,
            us(mux_p50), us(mux_p99), us(raw_p50), us(raw_p99),
            mux_p50.as_secs_f64() / raw_p50.as_secs_f64(), mux_p99.as_secs_f64() / raw_p99.as_secs_f64(),
            us(new_p50), us(new_p99), us(raw_p50), us(raw_p99),
            new_p50.as_secs_f64() / raw_p50.as_secs_f64(), new_p99.as_secs_f64() / raw_p99.as_secs_f64(),
        );
        println!("{table}");
        let target = if mux1 / raw1 >= 0.7 { "met" } else { "NOT met" };
        println!("one-stream throughput target (>= 0.7x socketpair): {target}");
        write_docs(&table, target);
    });
}

/// Replaces this benchmark's section of docs/performance.md.
fn write_docs(table: &str, target: &str) {
    perf_doc::rewrite(
        "ds-proto-bench",
        &format!(
            "_Latest run: `cargo bench -p ds-proto --bench channel`, {} UTC, {} cores._\n\n{table}\n\
             One-stream throughput target (>= 0.7x the raw socketpair): **{target}**.\n",
            humantime_now(),
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        ),
    );
}

fn humantime_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}")
}
