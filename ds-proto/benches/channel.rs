//! ds-proto channel benchmark: bulk throughput (1 and 16 streams) and small
//! round-trip latency, each against plain socketpairs measured in the same
//! run. `cargo bench -p ds-proto --bench channel` prints a table and
//! rewrites its section of docs/performance.md.

#[path = "../../tests/support/perf_doc.rs"]
mod perf_doc;

/// The allocator ds-host and the agent use (see their `main`): yamux
/// allocates per frame, so it is part of what is measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::{Duration, Instant};

use ds_proto::{Config, Incoming, Role, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

const BULK_BYTES: usize = 1 << 30;
const CHUNK: usize = 256 * 1024;
/// Bulk measurements per path (best counts).
const BULK_ROUNDS: usize = 5;
const ROUND_TRIPS: usize = 20_000;
const MSG: usize = 64;

/// Runs `side` on a thread of its own with its own single-threaded tokio
/// runtime. The two ends of every measurement run like this, because that
/// is how ds runs them: the host and the agent are two processes, and the
/// agent's runtime is single-threaded.
fn on_own_thread<F, Fut>(side: F) -> std::thread::JoinHandle<Fut::Output>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future,
    Fut::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(side())
    })
}

fn tokio_unix(s: StdUnixStream) -> UnixStream {
    s.set_nonblocking(true).unwrap();
    UnixStream::from_std(s).unwrap()
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

/// Waits for every task.
async fn all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        t.await.unwrap();
    }
}

/// Bytes per second over `streams` raw socketpairs in parallel: one thread
/// writes them all, another reads them all.
fn raw_bulk(streams: usize) -> f64 {
    let per = BULK_BYTES / streams;
    let (writers, readers): (Vec<_>, Vec<_>) =
        (0..streams).map(|_| StdUnixStream::pair().unwrap()).unzip();
    let start = Instant::now();
    let reading = on_own_thread(move || async move {
        let drains = readers
            .into_iter()
            .map(|r| tokio::spawn(async move { assert_eq!(drain(tokio_unix(r)).await, per) }));
        all(drains.collect()).await
    });
    let writing = on_own_thread(move || async move {
        let pumps = writers
            .into_iter()
            .map(|w| tokio::spawn(pump(tokio_unix(w), per)));
        all(pumps.collect()).await
    });
    writing.join().unwrap();
    reading.join().unwrap();
    BULK_BYTES as f64 / start.elapsed().as_secs_f64()
}

/// Bytes per second over `streams` streams of one channel in parallel: the
/// host's end writes them all, the agent's end reads them all. Timed from
/// the host's end being connected.
fn mux_bulk(streams: usize) -> f64 {
    let per = BULK_BYTES / streams;
    let (a, b) = StdUnixStream::pair().unwrap();
    // The host's end stays up until everything has been read: its driver
    // may still hold frames when the last write returns.
    let (read_all, all_read) = tokio::sync::oneshot::channel();
    let reading = on_own_thread(move || async move {
        let agent = Session::connect(b, Role::Agent, Config::default())
            .await
            .unwrap();
        let mut drains = Vec::new();
        for _ in 0..streams {
            let Ok(Incoming::Http(s)) = agent.accept().await else {
                panic!("the host's stream did not arrive")
            };
            drains.push(tokio::spawn(async move { assert_eq!(drain(s).await, per) }));
        }
        all(drains).await;
        let _ = read_all.send(());
    });
    let writing = on_own_thread(move || async move {
        let host = Session::connect(a, Role::Host, Config::default())
            .await
            .unwrap();
        let start = Instant::now();
        let h = host.handle();
        let mut pumps = Vec::new();
        for _ in 0..streams {
            let s = h.open_http().await.unwrap();
            pumps.push(tokio::spawn(pump(s, per)));
        }
        all(pumps).await;
        all_read.await.unwrap();
        drop(host);
        start
    });
    let start = writing.join().unwrap();
    reading.join().unwrap();
    BULK_BYTES as f64 / start.elapsed().as_secs_f64()
}

async fn echo_once<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, buf: &mut [u8; MSG]) {
    s.write_all(buf).await.unwrap();
    s.read_exact(buf).await.unwrap();
}

async fn echo_all<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = [0u8; MSG];
    while s.read_exact(&mut buf).await.is_ok() {
        s.write_all(&buf).await.unwrap();
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

/// 64-byte request/response on one raw socketpair.
fn raw_round_trip() -> (Duration, Duration) {
    let (a, b) = StdUnixStream::pair().unwrap();
    let echo = on_own_thread(move || async move { echo_all(tokio_unix(b)).await });
    let samples = on_own_thread(move || async move {
        let mut a = tokio_unix(a);
        let mut buf = [1u8; MSG];
        let mut samples = Vec::with_capacity(ROUND_TRIPS);
        for _ in 0..ROUND_TRIPS {
            let t = Instant::now();
            echo_once(&mut a, &mut buf).await;
            samples.push(t.elapsed());
        }
        samples
    })
    .join()
    .unwrap();
    echo.join().unwrap();
    percentiles(samples)
}

/// 64-byte request/response on one long-lived channel stream, and with a
/// fresh stream per request (how inbound HTTP requests travel).
fn mux_round_trip(fresh_stream_each: bool) -> (Duration, Duration) {
    let (a, b) = StdUnixStream::pair().unwrap();
    let echo = on_own_thread(move || async move {
        let agent = Session::connect(b, Role::Agent, Config::default())
            .await
            .unwrap();
        while let Ok(Incoming::Http(s)) = agent.accept().await {
            tokio::spawn(echo_all(s));
        }
    });
    let samples = on_own_thread(move || async move {
        let host = Session::connect(a, Role::Host, Config::default())
            .await
            .unwrap();
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
        samples
        // Dropping the host's session ends the agent's accept loop.
    })
    .join()
    .unwrap();
    echo.join().unwrap();
    percentiles(samples)
}

fn gib_s(bps: f64) -> String {
    format!("{:.2} GiB/s", bps / (1u64 << 30) as f64)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    // Warm up both paths once.
    raw_bulk(1);
    mux_bulk(1);

    // Bulk rounds alternate between the two paths, so that the
    // machine's drift (other tenants, frequency) weighs on both alike;
    // the best of each counts.
    let (mut raw1, mut mux1, mut raw16, mut mux16) = (0f64, 0f64, 0f64, 0f64);
    for _ in 0..BULK_ROUNDS {
        raw1 = raw1.max(raw_bulk(1));
        mux1 = mux1.max(mux_bulk(1));
        raw16 = raw16.max(raw_bulk(16));
        mux16 = mux16.max(mux_bulk(16));
    }
    let (raw_p50, raw_p99) = raw_round_trip();
    let (mux_p50, mux_p99) = mux_round_trip(false);
    let (new_p50, new_p99) = mux_round_trip(true);

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
}

/// Replaces this benchmark's section of docs/performance.md.
fn write_docs(table: &str, target: &str) {
    perf_doc::rewrite(
        "ds-proto-bench",
        &format!(
            "_Latest run: `cargo bench -p ds-proto --bench channel`, {} UTC, {} cores. \
             Each end (writer and reader, or host and agent) runs on a thread of its own \
             with a single-threaded runtime, as ds's two processes do._\n\n{table}\n\
             One-stream throughput target (>= 0.7x the raw socketpair): **{target}**.\n",
            humantime_now(),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
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
