//! The sampler: what changed since the last sample, into the hour it is
//! taken in.

use std::collections::HashMap;
use std::sync::Arc;

use crate::host::Host;
use crate::state::{hour_of, State, StateError, UsageHour};
use crate::supervisor::front_door::FrontDoor;

use super::Ended;

/// What the last sample saw of one appspace: running totals, so that the
/// next adds only the difference.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// CPU milliseconds: ended sandboxes' and the running one's. Never
    /// lowered: a total that dips (a sandbox gone whose report is not in
    /// yet) and comes back is not counted twice.
    cpu_ms: u64,
    /// The front door's request count.
    requests: u64,
}

/// Samples every appspace's usage into the state database.
#[derive(Debug)]
pub struct Sampler {
    state: Arc<State>,
    host: Arc<Host>,
    front: Arc<FrontDoor>,
    ended: Arc<Ended>,
    /// The last sample's totals, and the front door's restarts then; one
    /// sample at a time.
    seen: tokio::sync::Mutex<(HashMap<String, Seen>, u32)>,
}

impl Sampler {
    /// A sampler of `host`'s appspaces (whose ended sandboxes `ended`
    /// holds) and `front`'s request counts, into `state`.
    pub fn new(state: Arc<State>, host: Arc<Host>, front: Arc<FrontDoor>) -> Arc<Self> {
        let ended = host.launcher.ended();
        Arc::new(Self {
            state,
            host,
            front,
            ended,
            seen: tokio::sync::Mutex::default(),
        })
    }

    /// Samples every [`super::EVERY`] until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(super::EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is now: nothing to count yet
        loop {
            tick.tick().await;
            if let Err(e) = self.sample(crate::state::now()).await {
                tracing::warn!(error = %e, "could not record usage");
            }
        }
    }

    /// The last sample, when the host stops: after every sandbox stopped
    /// and reported (waiting up to `wait` for that), before the front
    /// door ends (its counts are read).
    pub async fn last_sample(&self, wait: std::time::Duration) {
        let missing = self.ended.settle(wait).await;
        if missing > 0 {
            tracing::warn!(
                missing,
                "sandboxes' usage reports did not come in time: their last CPU time is not counted"
            );
        }
        if let Err(e) = self.sample(crate::state::now()).await {
            tracing::warn!(error = %e, "could not record the last usage");
        }
    }

    /// Adds what every appspace used since the last sample to the hour
    /// holding `now` (Unix time).
    pub async fn sample(&self, now: i64) -> Result<(), StateError> {
        let mut guard = self.seen.lock().await;
        let (seen, front_restarts) = &mut *guard;
        let counts = self.front.refresh_usage().await;
        let restarts = self.front.status().restarts;
        let front_restarted = restarts != *front_restarts;
        let since_hour = std::time::Duration::from_secs((now - hour_of(now)).max(0) as u64);
        let mut rows = Vec::new();
        let mut present = Vec::new();
        for rec in self.state.appspaces().await? {
            let name = rec.name.clone();
            let runtime = self
                .host
                .get(&name)
                .filter(|a| a.config.name == name)
                .map(|a| a.runtime())
                .unwrap_or_default();
            let (ended_cpu, ended_peak) = self.ended.take(&name);
            let live = runtime.usage.unwrap_or_default();
            let was = seen.get(&name).copied().unwrap_or_default();
            let cpu_total = ended_cpu + live.cpu_ns / 1_000_000;
            // A running sandbox's peak is its whole run's: it belongs to
            // this hour only if the run started in it.
            let live_peak = match runtime.uptime {
                Some(up) if up <= since_hour => live.memory_peak,
                _ => live.memory_current,
            };
            let requests = counts
                .as_ref()
                .and_then(|c| c.iter().find(|u| u.name == name))
                .map(|u| u.requests);
            let new_requests = match requests {
                // The front door counts from zero again after a restart.
                Some(n) if front_restarted || n < was.requests => n,
                Some(n) => n - was.requests,
                None => 0,
            };
            let hour = UsageHour {
                hour: now,
                cpu_ms: cpu_total.saturating_sub(was.cpu_ms),
                memory_peak_bytes: ended_peak.max(live_peak),
                disk_bytes: crate::disk::usage(&rec),
                requests: new_requests,
                egress_bytes: 0,
            };
            seen.insert(
                name.clone(),
                Seen {
                    cpu_ms: was.cpu_ms.max(cpu_total),
                    requests: requests.unwrap_or(was.requests),
                },
            );
            present.push(name.clone());
            if hour
                != (UsageHour {
                    hour: now,
                    ..UsageHour::default()
                })
            {
                rows.push((name, hour));
            }
        }
        if counts.is_some() {
            *front_restarts = restarts;
        }
        // Appspaces gone: forget them (a new one of the same name starts
        // from nothing).
        seen.retain(|name, _| present.contains(name));
        self.ended.retain(|name| present.iter().any(|p| p == name));
        self.state.add_usage(&rows, now).await
    }
}
