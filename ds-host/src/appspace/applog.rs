//! Per-appspace logs: the app's stdout and stderr, and the host's own notes
//! about the appspace, go to `app.log` in the appspace's log directory.
//! Files are size-capped and rotated (a few old ones kept), and a rate
//! limit keeps a noisy app from filling the disk or hogging the host: lines
//! over the limit are dropped and the drop is recorded.
//!
//! Writing a file blocks, so no async worker writes one: lines go through
//! a bounded queue to one writer thread shared by every appspace's log.
//! When the queue is full (a disk that stalls), lines are dropped and
//! counted rather than stalling the host.

use std::io::Write;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest line kept whole; longer ones are cut.
const MAX_LINE: usize = 16 * 1024;

/// Caps of one appspace's log.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Size at which `app.log` is rotated.
    pub max_file_bytes: usize,
    /// Rotated files kept (`app.log.1` ...).
    pub keep_files: usize,
    /// Sustained bytes per second accepted from the app.
    pub bytes_per_second: NonZeroU32,
    /// Bytes accepted in a burst.
    pub burst_bytes: NonZeroU32,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 1 << 20,
            keep_files: 3,
            bytes_per_second: NonZeroU32::new(64 * 1024).expect("non-zero"),
            burst_bytes: NonZeroU32::new(256 * 1024).expect("non-zero"),
        }
    }
}

/// Lines waiting for the writer thread, at most.
const QUEUE: usize = 8192;

type LogFile = Arc<Mutex<FileRotate<AppendCount>>>;

enum Job {
    Line(LogFile, Vec<u8>),
    /// Answered once every line queued before it is written.
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// The queue to the writer thread, started on first use.
fn writer() -> &'static std::sync::mpsc::SyncSender<Job> {
    static WRITER: std::sync::OnceLock<std::sync::mpsc::SyncSender<Job>> =
        std::sync::OnceLock::new();
    WRITER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("ds-applog".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Line(file, line) => {
                            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                            // A full disk must not take the host down; the
                            // line is lost.
                            let _ = file.write_all(&line);
                        }
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the app log writer; app logs are lost");
        }
        tx
    })
}

/// Waits (blocking) until every line of every appspace's log queued so
/// far is written: a stopping host calls it last.
pub fn flush_all() {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    if writer().send(Job::Flush(tx)).is_ok() {
        let _ = rx.recv();
    }
}

/// One appspace's log.
pub struct AppLog {
    file: LogFile,
    limiter: DefaultDirectRateLimiter,
    dropped: AtomicU64,
}

impl std::fmt::Debug for AppLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppLog")
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

/// UTC with milliseconds: what an admin reading the log wants to see.
fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl AppLog {
    /// Opens (creating) `dir/app.log`.
    pub fn open(dir: &Path, limits: LogLimits) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let file = FileRotate::new(
            dir.join("app.log"),
            AppendCount::new(limits.keep_files),
            ContentLimit::BytesSurpassed(limits.max_file_bytes),
            Compression::None,
            None,
        );
        let quota = Quota::per_second(limits.bytes_per_second).allow_burst(limits.burst_bytes);
        Ok(Arc::new(Self {
            file: Arc::new(Mutex::new(file)),
            limiter: RateLimiter::direct(quota),
            dropped: AtomicU64::new(0),
        }))
    }

    fn write_line(&self, source: &str, text: &[u8]) {
        let mut line = Vec::with_capacity(text.len() + 32);
        let _ = write!(line, "{} {source}: ", now());
        line.extend_from_slice(text);
        line.push(b'\n');
        let len = line.len() as u64;
        if writer()
            .try_send(Job::Line(self.file.clone(), line))
            .is_err()
        {
            self.dropped.fetch_add(len, Ordering::Relaxed);
        }
    }

    /// Waits (blocking) until every line logged so far is written.
    pub fn flush(&self) {
        flush_all();
    }

    /// A note from the host itself (never rate limited).
    pub fn host(&self, text: &str) {
        self.write_line("ds-host", text.as_bytes());
    }

    /// A line of the app's output, subject to the rate limit.
    pub fn app(&self, source: &str, text: &[u8]) {
        let cost = NonZeroU32::new(u32::try_from(text.len().max(1)).unwrap_or(u32::MAX))
            .expect("non-zero");
        if !matches!(self.limiter.check_n(cost), Ok(Ok(()))) {
            self.dropped
                .fetch_add(text.len() as u64 + 1, Ordering::Relaxed);
            return;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            self.host(&format!(
                "rate limit: dropped {dropped} bytes of app output"
            ));
        }
        self.write_line(source, text);
    }

    /// Copies `reader` (the app's stdout or stderr) into the log line by
    /// line until it ends. Lines longer than 16 KiB are cut.
    pub fn pump(
        self: Arc<Self>,
        mut reader: impl AsyncRead + Unpin + Send + 'static,
        source: &'static str,
    ) {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut pending: Vec<u8> = Vec::new();
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    self.app(source, &line[..line.len() - 1]);
                }
                if pending.len() > MAX_LINE {
                    let mut cut: Vec<u8> = std::mem::take(&mut pending);
                    cut.truncate(MAX_LINE);
                    cut.extend_from_slice(" [line cut at 16 KiB]".as_bytes());
                    self.app(source, &cut);
                }
            }
            if !pending.is_empty() {
                self.app(source, &pending);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_logged_and_floods_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            max_file_bytes: 4096,
            keep_files: 2,
            bytes_per_second: NonZeroU32::new(1000).unwrap(),
            burst_bytes: NonZeroU32::new(2000).unwrap(),
        };
        let log = AppLog::open(dir.path(), limits).unwrap();
        log.host("sandbox started");
        log.app("stdout", b"hello");
        // A flood: 1 MB at once gets mostly dropped.
        for _ in 0..10_000 {
            log.app("stderr", &[b'x'; 100]);
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
        log.app("stdout", b"after the flood");
        log.flush();
        let mut total = 0;
        let mut text = String::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            total += std::fs::metadata(&path).unwrap().len();
            text.push_str(&std::fs::read_to_string(&path).unwrap());
        }
        // Three files at most (app.log + 2 kept), each about the cap.
        assert!(std::fs::read_dir(dir.path()).unwrap().count() <= 3);
        assert!(total < 3 * 4096 + 2048, "{total} bytes on disk");
        assert!(text.contains("after the flood"), "{text}");
        assert!(text.contains("rate limit: dropped"), "{text}");
    }
}
