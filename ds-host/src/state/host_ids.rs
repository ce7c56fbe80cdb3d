//! The `host_ids` table: each appspace's own host uid and gid (one
//! number), from [`ds_api::ids::HOST_IDS`]. Ids are handed out in order
//! and never again while data they own may exist: deleting an appspace
//! keeps its data aside, so its id stays taken; only a purge releases it,
//! and released ids are reused only once the range is used up.

use sqlx::{Row, SqliteConnection};

use super::{db, now, State, StateError};

/// Takes the next free id for `appspace` (inside the caller's
/// transaction).
pub(super) async fn allocate(
    conn: &mut SqliteConnection,
    appspace: &str,
) -> Result<u32, StateError> {
    let (first, last) = (
        i64::from(*ds_api::ids::HOST_IDS.start()),
        i64::from(*ds_api::ids::HOST_IDS.end()),
    );
    let highest: Option<i64> = sqlx::query("SELECT max(id) FROM host_ids")
        .fetch_one(&mut *conn)
        .await
        .map_err(db("reading host ids"))?
        .get(0);
    let next = match highest {
        None => first,
        Some(h) if h < last => (h + 1).max(first),
        Some(_) => {
            let released: Option<i64> =
                sqlx::query("SELECT min(id) FROM host_ids WHERE released_at IS NOT NULL")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db("reading released host ids"))?
                    .get(0);
            let id = released.ok_or_else(|| {
                StateError::Conflict(format!(
                    "every host uid from {first} to {last} belongs to an appspace or to data kept \
                     from one; purge deleted appspaces to free some"
                ))
            })?;
            sqlx::query("DELETE FROM host_ids WHERE id = ?")
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(db("reusing a released host id"))?;
            id
        }
    };
    sqlx::query("INSERT INTO host_ids (id, appspace, allocated_at) VALUES (?, ?, ?)")
        .bind(next)
        .bind(appspace)
        .bind(now())
        .execute(&mut *conn)
        .await
        .map_err(db("allocating a host id"))?;
    Ok(next as u32)
}

impl State {
    /// Marks `id` free: nothing it owned exists any more (the appspace was
    /// purged).
    pub async fn release_host_id(&self, id: u32) -> Result<(), StateError> {
        sqlx::query("UPDATE host_ids SET released_at = ? WHERE id = ? AND released_at IS NULL")
            .bind(now())
            .bind(i64::from(id))
            .execute(&self.pool)
            .await
            .map_err(db("releasing a host id"))?;
        Ok(())
    }
}
