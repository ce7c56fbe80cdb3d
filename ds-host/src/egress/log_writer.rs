//! Writes egress attempts to the database off the data path, many to a
//! transaction, and drains what is still on its way when the host stops.
//!
//! Why batches: a transaction per attempt cost the host ~0.5 ms of CPU
//! per proxied connection (four statements, each a round trip to sqlx's
//! SQLite thread, and a commit), more than the connection itself. The
//! first attempt of a batch waits [`LINGER`] for others to join it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{EgressEvent, EgressSink};
use crate::state::State;

/// How long the first attempt of a batch waits for others (an attempt is
/// in the log at most this much later than without batching).
const LINGER: Duration = Duration::from_millis(20);
/// Attempts per transaction at most.
const MAX_BATCH: usize = 256;
/// Attempts on their way to the writer before senders wait.
const QUEUE: usize = 4096;
/// How long the host waits for the last batches when it stops.
const FINISH_WAIT: Duration = Duration::from_secs(5);

/// The running writer; [`EgressLogWriter::finish`] drains it (dropped
/// without `finish`, it drains what was sent and ends, unawaited).
#[derive(Debug)]
pub struct EgressLogWriter {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl EgressLogWriter {
    /// Starts the writer into `state`; returns where to send attempts.
    pub fn start(state: Arc<State>) -> (EgressSink, Self) {
        let (sink, events) = mpsc::channel(QUEUE);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(write_batches(state, events, stopped));
        (sink, Self { stop, task })
    }

    /// Writes every attempt sent so far, then ends the writer (when the
    /// host stops, after its appspaces: their last connections are
    /// recorded as they close).
    pub async fn finish(self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(FINISH_WAIT, self.task).await.is_err() {
            tracing::warn!("the egress log writer did not finish in {FINISH_WAIT:?}");
        }
    }
}

async fn write_batches(
    state: Arc<State>,
    mut events: mpsc::Receiver<EgressEvent>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    loop {
        if !stopping {
            tokio::select! {
                received = events.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        return; // every sender is gone, nothing is left
                    }
                }
                _ = &mut stop => stopping = true,
            }
        }
        if !stopping && batch.len() < MAX_BATCH {
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                _ = &mut stop => stopping = true,
            }
        }
        while batch.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            return; // stopping, and everything is written
        }
        if let Err(e) = state.record_egress(&batch).await {
            tracing::warn!(error = %e, attempts = batch.len(), "could not write the egress log");
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::Outcome;

    fn attempt(n: u64) -> EgressEvent {
        EgressEvent {
            appspace: "a".into(),
            destination: format!("example.com:{n}"),
            address: None,
            outcome: Outcome::Denied,
            reason: "not on the list".into(),
            bytes_up: n,
            bytes_down: 0,
            duration: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn a_burst_is_written_whole_and_nothing_is_lost_at_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(State::open(&dir.path().join("s")).await.unwrap());
        let (sink, writer) = EgressLogWriter::start(state.clone());
        for n in 0..600 {
            sink.send(attempt(n)).await.unwrap();
        }
        // The last ones are still lingering when the host stops.
        writer.finish().await;
        let log = state.egress_log("a", 1000).await.unwrap();
        assert_eq!(log.len(), 600);
        let ups: Vec<u64> = log.iter().map(|e| e.event.bytes_up).collect();
        assert_eq!(ups, (0..600).collect::<Vec<_>>(), "in order, each once");
    }

    #[tokio::test]
    async fn a_lone_attempt_is_written_after_the_linger() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(State::open(&dir.path().join("s")).await.unwrap());
        let (sink, _writer) = EgressLogWriter::start(state.clone());
        sink.send(attempt(7)).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while state.egress_log("a", 10).await.unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
