//! What ended sandboxes used, as their launchers reported it.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;

/// Per appspace: CPU time of every sandbox that ended since the host
/// started (only ever grows), and the highest peak of those that ended
/// since the last sample (taken by it).
#[derive(Debug, Default)]
pub struct Ended {
    by_appspace: Mutex<HashMap<String, EndedRuns>>,
    /// Reports still to come (sandboxes running or ending).
    pending: tokio::sync::watch::Sender<usize>,
}

#[derive(Debug, Default, Clone, Copy)]
struct EndedRuns {
    cpu_ms: u64,
    peak_since_sample: u64,
}

impl Ended {
    /// Adds one ended sandbox of `appspace`.
    pub fn add(&self, appspace: &str, cpu_ms: u64, memory_peak: u64) {
        let mut map = self.by_appspace.lock().unwrap_or_else(|p| p.into_inner());
        let runs = map.entry(appspace.to_owned()).or_default();
        runs.cpu_ms = runs.cpu_ms.saturating_add(cpu_ms);
        runs.peak_since_sample = runs.peak_since_sample.max(memory_peak);
    }

    /// Waits up to `wait` for the reports of every sandbox started so far
    /// (the host stopping, its sandboxes stopped); returns how many did
    /// not come.
    pub async fn settle(&self, wait: std::time::Duration) -> usize {
        let mut pending = self.pending.subscribe();
        let _ = tokio::time::timeout(wait, pending.wait_for(|n| *n == 0)).await;
        let left = *pending.borrow();
        left
    }

    /// Forgets the appspaces `keep` says no to (deleted ones).
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut map = self.by_appspace.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|name, _| keep(name));
    }

    /// CPU time of `appspace`'s ended sandboxes, and the highest peak of
    /// those ended since the last call (which starts afresh).
    pub(crate) fn take(&self, appspace: &str) -> (u64, u64) {
        let mut map = self.by_appspace.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(appspace) {
            Some(runs) => (runs.cpu_ms, std::mem::take(&mut runs.peak_since_sample)),
            None => (0, 0),
        }
    }
}

/// Reads a launcher's report (`cpu_ms=N memory_peak_bytes=N
/// oom_kills=N`): the CPU milliseconds and peak bytes, or `None` for
/// anything else.
pub fn parse_report(text: &str) -> Option<(u64, u64)> {
    let line = text.strip_suffix('\n')?;
    let (mut cpu, mut peak) = (None, None);
    for field in line.split(' ') {
        let (key, value) = field.split_once('=')?;
        let value: u64 = value.parse().ok()?;
        match key {
            "cpu_ms" => cpu = Some(value),
            "memory_peak_bytes" => peak = Some(value),
            "oom_kills" => {}
            _ => return None,
        }
    }
    Some((cpu?, peak?))
}

/// Reads the report a launcher writes on `pipe` as its sandbox ends and
/// adds it to `ended` for `appspace`, in the background. A launcher that
/// dies without one (killed) reports nothing: what its last sample saw
/// is kept.
pub fn read_report(pipe: OwnedFd, appspace: String, ended: Arc<Ended>) {
    let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(appspace = %appspace, error = %e, "cannot read the launcher's usage report");
            return;
        }
    };
    ended.pending.send_modify(|n| *n += 1);
    tokio::spawn(async move {
        let mut text = String::new();
        // One short line; anything longer is not a report.
        let read = pipe.take(256).read_to_string(&mut text).await;
        if read.is_ok() && !text.is_empty() {
            match parse_report(&text) {
                Some((cpu_ms, peak)) => ended.add(&appspace, cpu_ms, peak),
                None => {
                    tracing::warn!(appspace = %appspace, report = %text.trim_end(), "the launcher's usage report is malformed")
                }
            }
        }
        ended.pending.send_modify(|n| *n -= 1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse_and_nothing_else_does() {
        assert_eq!(
            parse_report("cpu_ms=12 memory_peak_bytes=4096 oom_kills=0\n"),
            Some((12, 4096))
        );
        for bad in [
            "",
            "cpu_ms=12 memory_peak_bytes=4096 oom_kills=0",
            "cpu_ms=12\n",
            "cpu_ms=x memory_peak_bytes=1 oom_kills=0\n",
            "cpu_ms=1 memory_peak_bytes=1 oom_kills=0 extra=1\n",
            "cpu_ms=-1 memory_peak_bytes=1 oom_kills=0\n",
        ] {
            assert_eq!(parse_report(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ended_runs_add_and_peaks_are_taken_once() {
        let e = Ended::default();
        e.add("a", 10, 100);
        e.add("a", 5, 50);
        assert_eq!(e.take("a"), (15, 100));
        assert_eq!(e.take("a"), (15, 0));
        assert_eq!(e.take("b"), (0, 0));
    }

    #[tokio::test]
    async fn a_report_on_the_pipe_is_added() {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let ended = Arc::new(Ended::default());
        read_report(r, "a".into(), ended.clone());
        rustix::io::write(&w, b"cpu_ms=7 memory_peak_bytes=9 oom_kills=1\n").unwrap();
        drop(w);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ended.take("a").0 == 0 {
            assert!(std::time::Instant::now() < deadline, "never added");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
