//! Counts egress attempts not yet handed to the egress log, so that a
//! stopping host can wait for the last ones (those its appspaces' stop
//! ended) before it drains the log writer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Attempts under way (see the module documentation).
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    settled: Notify,
}

/// One attempt under way, until dropped.
#[derive(Debug)]
pub struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    /// Counts one attempt until the guard is dropped.
    pub fn enter(&self) -> InFlightGuard<'_> {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self)
    }

    /// Waits until no attempt is under way, for at most `within`; says
    /// whether that happened.
    pub async fn settled(&self, within: Duration) -> bool {
        let wait = async {
            loop {
                // Registered before the check, so that a last guard dropped
                // in between still wakes us.
                let notified = self.settled.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn settles_when_the_last_attempt_ends_and_not_before() {
        let in_flight = Arc::new(InFlight::default());
        assert!(in_flight.settled(Duration::ZERO).await, "none under way");
        let first = in_flight.enter();
        let second = in_flight.enter();
        assert!(!in_flight.settled(Duration::from_millis(20)).await);
        drop(first);
        assert!(!in_flight.settled(Duration::from_millis(20)).await);
        let waiter = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.settled(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(second);
        assert!(waiter.await.unwrap(), "woken by the last one");
    }
}
