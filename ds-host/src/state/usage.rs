//! `usage_hours`: each appspace's use of resources per hour
//! (docs/usage.md). Amounts (CPU, requests, egress) add up; highs
//! (memory, disk) keep the highest seen in the hour.

use sqlx::Row;

use super::{db, State, StateError};

/// How long usage is kept.
pub const USAGE_KEEP_SECS: i64 = 30 * 24 * 3600;

/// The first second of the hour holding `at` (Unix time).
pub fn hour_of(at: i64) -> i64 {
    at - at.rem_euclid(3600)
}

/// Use of one appspace in one hour: what a sample adds, or what is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageHour {
    /// The hour's first second (Unix time).
    pub hour: i64,
    /// CPU time, milliseconds.
    pub cpu_ms: u64,
    /// The highest memory use seen, bytes.
    pub memory_peak_bytes: u64,
    /// The most disk used seen, bytes; `None` where nothing measures it
    /// (an appspace without a disk limit).
    pub disk_bytes: Option<u64>,
    /// Requests served.
    pub requests: u64,
    /// Egress bytes, out and in.
    pub egress_bytes: u64,
}

impl State {
    /// Adds `rows` (appspace, use) to the hours they name (rows of
    /// appspaces deleted meanwhile are dropped), and forgets
    /// hours older than [`USAGE_KEEP_SECS`] before `now`; one transaction.
    pub async fn add_usage(
        &self,
        rows: &[(String, UsageHour)],
        now: i64,
    ) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await.map_err(db("beginning"))?;
        for (appspace, u) in rows {
            sqlx::query(
                "INSERT INTO usage_hours
                     (appspace, hour, cpu_ms, memory_peak_bytes, disk_bytes, requests, egress_bytes)
                 SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM appspaces WHERE name = ?)
                 ON CONFLICT (appspace, hour) DO UPDATE SET
                     cpu_ms = cpu_ms + excluded.cpu_ms,
                     memory_peak_bytes = max(memory_peak_bytes, excluded.memory_peak_bytes),
                     disk_bytes = CASE
                         WHEN excluded.disk_bytes IS NULL THEN disk_bytes
                         WHEN disk_bytes IS NULL THEN excluded.disk_bytes
                         ELSE max(disk_bytes, excluded.disk_bytes) END,
                     requests = requests + excluded.requests,
                     egress_bytes = egress_bytes + excluded.egress_bytes",
            )
            .bind(appspace)
            .bind(hour_of(u.hour))
            .bind(u.cpu_ms as i64)
            .bind(u.memory_peak_bytes as i64)
            .bind(u.disk_bytes.map(|d| d as i64))
            .bind(u.requests as i64)
            .bind(u.egress_bytes as i64)
            .bind(appspace)
            .execute(&mut *tx)
            .await
            .map_err(db("recording usage"))?;
        }
        sqlx::query("DELETE FROM usage_hours WHERE hour < ?")
            .bind(hour_of(now - USAGE_KEEP_SECS))
            .execute(&mut *tx)
            .await
            .map_err(db("forgetting old usage"))?;
        tx.commit().await.map_err(db("committing usage"))
    }

    /// The hours of `appspace` from the one holding `since` on, oldest
    /// first.
    pub async fn usage_hours(
        &self,
        appspace: &str,
        since: i64,
    ) -> Result<Vec<UsageHour>, StateError> {
        let rows = sqlx::query(
            "SELECT hour, cpu_ms, memory_peak_bytes, disk_bytes, requests, egress_bytes
             FROM usage_hours WHERE appspace = ? AND hour >= ? ORDER BY hour",
        )
        .bind(appspace)
        .bind(hour_of(since))
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading usage"))?;
        Ok(rows
            .iter()
            .map(|r| UsageHour {
                hour: r.get(0),
                cpu_ms: r.get::<i64, _>(1) as u64,
                memory_peak_bytes: r.get::<i64, _>(2) as u64,
                disk_bytes: r.get::<Option<i64>, _>(3).map(|d| d as u64),
                requests: r.get::<i64, _>(4) as u64,
                egress_bytes: r.get::<i64, _>(5) as u64,
            })
            .collect())
    }
}
