//! The egress allowlist of each appspace and the egress log.

use sqlx::Row;

use super::{db, now, State, StateError};
use crate::egress::{EgressEvent, Outcome};

/// Rows of the egress log kept (the oldest go first).
pub const EGRESS_LOG_KEEP: i64 = 100_000;

/// A recorded egress attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressLogEntry {
    /// Sequence number.
    pub id: i64,
    /// When it ended (Unix seconds).
    pub at: i64,
    /// What it was.
    pub event: EgressEvent,
}

fn outcome_from(s: &str) -> Outcome {
    match s {
        "allowed" => Outcome::Allowed,
        "failed" => Outcome::Failed,
        _ => Outcome::Denied,
    }
}

impl State {
    /// Replaces an appspace's allowlist (entries already checked).
    pub async fn set_egress(&self, name: &str, entries: &[String]) -> Result<(), StateError> {
        let json = serde_json::to_string(entries)
            .map_err(|e| StateError::Conflict(format!("encoding the allowlist: {e}")))?;
        let mut tx = self.pool.begin().await.map_err(db("beginning"))?;
        let done = sqlx::query("UPDATE appspaces SET egress = ? WHERE name = ?")
            .bind(&json)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db("changing the egress allowlist"))?;
        if done.rows_affected() == 0 {
            return Err(StateError::NotFound(format!("no appspace {name:?}")));
        }
        tx.commit().await.map_err(db("committing the allowlist"))
    }

    /// Appends egress attempts; every so often the oldest rows beyond
    /// [`EGRESS_LOG_KEEP`] are dropped.
    pub async fn record_egress(&self, events: &[EgressEvent]) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await.map_err(db("beginning"))?;
        for e in events {
            sqlx::query(
                "INSERT INTO egress_log (at, appspace, destination, address, outcome, reason, bytes_up, bytes_down, duration_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(now())
            .bind(&e.appspace)
            .bind(&e.destination)
            .bind(&e.address)
            .bind(e.outcome.as_str())
            .bind(&e.reason)
            .bind(e.bytes_up as i64)
            .bind(e.bytes_down as i64)
            .bind(e.duration.as_millis() as i64)
            .execute(&mut *tx)
            .await
            .map_err(db("writing the egress log"))?;
        }
        // What moved counts to the appspace's usage in the hour it closed
        // (docs/usage.md), in the same transaction as its log line.
        let mut moved: Vec<(&str, u64)> = Vec::new();
        for e in events.iter().filter(|e| e.bytes_up + e.bytes_down > 0) {
            match moved.iter_mut().find(|(a, _)| *a == e.appspace) {
                Some((_, n)) => *n += e.bytes_up + e.bytes_down,
                None => moved.push((&e.appspace, e.bytes_up + e.bytes_down)),
            }
        }
        for (appspace, bytes) in moved {
            sqlx::query(
                "INSERT INTO usage_hours (appspace, hour, egress_bytes)
                 SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM appspaces WHERE name = ?)
                 ON CONFLICT (appspace, hour) DO UPDATE SET
                     egress_bytes = egress_bytes + excluded.egress_bytes",
            )
            .bind(appspace)
            .bind(super::hour_of(now()))
            .bind(bytes as i64)
            .bind(appspace)
            .execute(&mut *tx)
            .await
            .map_err(db("counting egress bytes"))?;
        }
        sqlx::query("DELETE FROM egress_log WHERE id <= (SELECT max(id) FROM egress_log) - ?")
            .bind(EGRESS_LOG_KEEP)
            .execute(&mut *tx)
            .await
            .map_err(db("pruning the egress log"))?;
        tx.commit().await.map_err(db("committing the egress log"))
    }

    /// The newest `limit` egress attempts of `appspace`, oldest first.
    pub async fn egress_log(
        &self,
        appspace: &str,
        limit: u32,
    ) -> Result<Vec<EgressLogEntry>, StateError> {
        let rows = sqlx::query(
            "SELECT id, at, destination, address, outcome, reason, bytes_up, bytes_down, duration_ms
             FROM egress_log WHERE appspace = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(appspace)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the egress log"))?;
        let mut out: Vec<EgressLogEntry> = rows
            .iter()
            .map(|r| EgressLogEntry {
                id: r.get(0),
                at: r.get(1),
                event: EgressEvent {
                    appspace: appspace.to_owned(),
                    destination: r.get(2),
                    address: r.get(3),
                    outcome: outcome_from(&r.get::<String, _>(4)),
                    reason: r.get(5),
                    bytes_up: r.get::<i64, _>(6) as u64,
                    bytes_down: r.get::<i64, _>(7) as u64,
                    duration: std::time::Duration::from_millis(r.get::<i64, _>(8) as u64),
                },
            })
            .collect();
        out.reverse();
        Ok(out)
    }
}
