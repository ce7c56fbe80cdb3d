//! Questions asked over the control socket and waiting for their answer,
//! by request number: one mechanism for both sides (the front door's
//! starts, the supervisor's lookups and usage requests). A question whose
//! asker gives up (a timeout drops its future) is forgotten with it, so
//! nothing piles up when answers are lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

type Waiting<T> = Arc<Mutex<HashMap<u64, oneshot::Sender<T>>>>;

/// Questions waiting for answers of type `T`.
#[derive(Debug)]
pub struct Pending<T> {
    waiting: Waiting<T>,
    next: AtomicU64,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self {
            waiting: Arc::default(),
            next: AtomicU64::new(1),
        }
    }
}

/// One question: its request number, and its answer once it comes. Dropped
/// before that, the question is forgotten.
#[derive(Debug)]
pub struct Asked<T> {
    /// Its request number, to send with the question.
    pub request: u64,
    answer: Option<oneshot::Receiver<T>>,
    waiting: Waiting<T>,
}

impl<T> Pending<T> {
    /// A new question.
    pub fn ask(&self) -> Asked<T> {
        let request = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(request, tx);
        Asked {
            request,
            answer: Some(rx),
            waiting: self.waiting.clone(),
        }
    }

    /// Gives `answer` to question `request`; false if nobody waits for it
    /// (never asked, or given up).
    pub fn answer(&self, request: u64, answer: T) -> bool {
        match lock(&self.waiting).remove(&request) {
            Some(tx) => tx.send(answer).is_ok(),
            None => false,
        }
    }
}

impl<T> Asked<T> {
    /// The answer; `None` if the other side went away without one.
    pub async fn answer(mut self) -> Option<T> {
        self.answer.take()?.await.ok()
    }
}

impl<T> Drop for Asked<T> {
    fn drop(&mut self) {
        lock(&self.waiting).remove(&self.request);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_reach_their_question_and_abandoned_ones_are_forgotten() {
        let pending = Pending::<u32>::default();
        let (a, b) = (pending.ask(), pending.ask());
        assert_ne!(a.request, b.request);
        assert!(pending.answer(b.request, 2));
        assert!(!pending.answer(999, 0), "never asked");
        assert_eq!(b.answer().await, Some(2));
        let request = a.request;
        drop(a);
        assert!(!pending.answer(request, 1), "given up: forgotten");
        assert!(lock(&pending.waiting).is_empty());
        // Given up by a timeout, as the askers do.
        let c = pending.ask();
        let request = c.request;
        let timed_out =
            tokio::time::timeout(std::time::Duration::from_millis(10), c.answer()).await;
        assert!(timed_out.is_err());
        assert!(!pending.answer(request, 3));
        assert!(lock(&pending.waiting).is_empty());
    }
}
