//! The profile change log: which profiles each write of profiles touched, numbered by generation.
//!
//! Contract:
//! - Every transaction that writes or removes profiles ([`crate::IdentityStore::write_resolution`]) appends
//!   one row in that same transaction: the ids it wrote or removed, or `everything` for a rebuild that
//!   replaced every profile. Generations only grow.
//! - A reader that holds a copy of the profiles as of generation `g` brings it up to date by applying
//!   [`ProfileChangeStore::profile_changes_since`]`(g)`: re-read the listed ids (a missing one was
//!   removed). When rows it would need were pruned, the answer says so (`complete == false`) and the reader
//!   reloads everything.
//! - The log keeps the last [`KEEP`] generations.
//! - On PostgreSQL two writers in different processes may commit out of generation order; Spindle's own
//!   writers resolve one at a time per daemon, and a daemon's copy is reloaded when the log says it fell
//!   behind, so run one daemon per store.

use std::collections::BTreeSet;

use async_trait::async_trait;
use sqlx::Row;

use crate::StoreResult;
use crate::sql::{SqlStore, to_millis};

/// Generations of the log kept; older rows are pruned by the writes that follow.
pub const KEEP: i64 = 1_000;

/// What changed among the profiles after a generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileChanges {
    /// The newest generation covered: the reader's copy is at this generation once it applied the rest.
    pub generation: i64,
    /// Ids written or removed after the reader's generation.
    pub ids: BTreeSet<i64>,
    /// True when every profile may have changed (a rebuild), or the log no longer reaches back to the
    /// reader's generation: reload everything.
    pub everything: bool,
}

/// Reading the profile change log.
#[async_trait]
pub trait ProfileChangeStore: Send + Sync {
    /// The newest generation (0 before the first write of profiles).
    async fn profile_generation(&self) -> StoreResult<i64>;
    /// What changed after generation `after`.
    async fn profile_changes_since(&self, after: i64) -> StoreResult<ProfileChanges>;
}

/// The newest generation as `conn` sees it (0 before the first write of profiles).
pub(crate) async fn newest_generation(conn: &mut sqlx::AnyConnection) -> StoreResult<i64> {
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(generation) FROM profile_changes")
        .fetch_one(conn)
        .await?;
    Ok(newest.unwrap_or(0))
}

/// Appends one row of the log inside the writer's transaction (none when nothing was touched) and prunes
/// rows older than [`KEEP`] generations.
pub(crate) async fn record(
    conn: &mut sqlx::AnyConnection,
    ids: impl IntoIterator<Item = i64>,
    everything: bool,
) -> StoreResult<()> {
    let ids: BTreeSet<i64> = ids.into_iter().collect();
    if ids.is_empty() && !everything {
        return Ok(());
    }
    let listed = if everything {
        "[]".to_owned()
    } else {
        serde_json::to_string(&ids)?
    };
    let now = to_millis(chrono::Utc::now());
    sqlx::query(
        "INSERT INTO profile_changes (changed_at, everything, profile_ids) VALUES ($1, $2, $3)",
    )
    .bind(now)
    .bind(i32::from(everything))
    .bind(listed)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM profile_changes WHERE generation < (SELECT MAX(generation) FROM profile_changes) - $1",
    )
    .bind(KEEP)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl ProfileChangeStore for SqlStore {
    async fn profile_generation(&self) -> StoreResult<i64> {
        newest_generation(&mut *self.pool().acquire().await?).await
    }

    async fn profile_changes_since(&self, after: i64) -> StoreResult<ProfileChanges> {
        // The oldest row kept comes from the same statement (one snapshot), so a prune between two reads
        // cannot hide rows.
        let rows = sqlx::query(
            "SELECT generation, everything, profile_ids, (SELECT MIN(generation) FROM profile_changes) \
             FROM profile_changes WHERE generation > $1 ORDER BY generation",
        )
        .bind(after)
        .fetch_all(self.pool())
        .await?;
        let oldest: Option<i64> = match rows.first() {
            Some(row) => row.try_get(3)?,
            None => None,
        };
        let mut changes = ProfileChanges {
            generation: after,
            // Rows after `after` were pruned: what they listed is unknown.
            everything: oldest.is_some_and(|oldest| oldest > after + 1),
            ..ProfileChanges::default()
        };
        for row in rows {
            changes.generation = row.try_get(0)?;
            if row.try_get::<i32, _>(1)? != 0 {
                changes.everything = true;
            } else if !changes.everything {
                let ids: Vec<i64> = serde_json::from_str(row.try_get::<&str, _>(2)?)?;
                changes.ids.extend(ids);
            }
        }
        if changes.everything {
            changes.ids.clear();
        }
        Ok(changes)
    }
}
