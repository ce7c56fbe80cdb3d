//! The audit log: every change made through the admin API, with who asked
//! (credentials of the peer socket), what, when and how it went.

use sqlx::Row;

use super::{db, now, State, StateError};

/// One change to record.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// The peer's uid.
    pub uid: u32,
    /// The peer's pid, when known.
    pub pid: Option<i32>,
    /// The peer's user name (or its uid as text).
    pub user: String,
    /// What was asked (`app.install`, `appspace.stop`, ...).
    pub action: String,
    /// What it was asked of (an app, a domain).
    pub target: String,
    /// Arguments worth keeping.
    pub detail: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// The outcome in words (the error message on failure).
    pub result: String,
}

/// A recorded change.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// When (Unix seconds).
    pub at: i64,
    /// What was recorded.
    pub record: AuditRecord,
}

impl State {
    /// Appends to the audit log.
    pub async fn audit(&self, r: &AuditRecord) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO audit (at, uid, pid, user, action, target, detail, ok, result)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(now())
        .bind(r.uid)
        .bind(r.pid)
        .bind(&r.user)
        .bind(&r.action)
        .bind(&r.target)
        .bind(&r.detail)
        .bind(r.ok)
        .bind(&r.result)
        .execute(&self.pool)
        .await
        .map_err(db("writing the audit log"))?;
        Ok(())
    }

    /// Audit entries at or after `since` (Unix seconds), oldest first.
    pub async fn audit_since(&self, since: i64) -> Result<Vec<AuditEntry>, StateError> {
        let rows = sqlx::query(
            "SELECT id, at, uid, pid, user, action, target, detail, ok, result
             FROM audit WHERE at >= ? ORDER BY id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the audit log"))?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get(0),
                at: r.get(1),
                record: AuditRecord {
                    uid: r.get::<i64, _>(2) as u32,
                    pid: r.get(3),
                    user: r.get(4),
                    action: r.get(5),
                    target: r.get(6),
                    detail: r.get(7),
                    ok: r.get(8),
                    result: r.get(9),
                },
            })
            .collect())
    }
}
