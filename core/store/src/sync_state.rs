//! Segment memberships and audience-sync state, behind [`SyncStore`].
//!
//! Contract:
//! - `segment_members` holds current members; every entry and exit is appended to `segment_history`
//!   in the same transaction that changes membership.
//! - `sync_delivered` is what each sync's destination is known to hold (a payload hash per profile).
//!   `sync_outbox` holds changes waiting to be sent; a change leaves the outbox in the same transaction that
//!   records its outcome (delivered state updated, or a dead letter written), so a crash at any point leaves
//!   it either pending (and re-sent: destinations must treat a re-send as idempotent) or settled, never lost.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row};

use crate::identity::CHUNK;
use crate::sql::{SqlStore, param, placeholders, to_millis};
use crate::{ProfileStore, StoreResult};

/// A change to send to a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// The profile.
    pub profile_id: i64,
    /// `upsert` or `remove`.
    pub op: String,
    /// The mapped fields (JSON object).
    pub payload: String,
    /// Hash of `payload`, recorded as delivered when it is.
    pub payload_hash: String,
    /// The identifiers sent with it (JSON list of `[type, value]`).
    pub identifiers: String,
    /// The version (`updated_at` in milliseconds) of the profile the payload was computed from; recorded
    /// with the outcome so the next diff can skip the profile while it does not change.
    pub profile_version: Option<i64>,
}

/// What a sync's diff must look at when its field mapping is unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffCandidates {
    /// Members whose profile changed since the destination got (or refused) it, or that it never got:
    /// `(profile, payload hash the destination holds)`.
    pub changed: Vec<(i64, Option<String>)>,
    /// Profiles the destination holds that are no longer members (or no longer exist).
    pub departed: Vec<i64>,
}

/// A change waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// The change.
    pub item: OutboxItem,
    /// Attempts so far.
    pub attempts: u32,
}

/// What became of one outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The destination has it.
    Delivered {
        /// Outbox row.
        id: i64,
    },
    /// Try again at `not_before`.
    Retry {
        /// Outbox row.
        id: i64,
        /// Earliest next attempt.
        not_before: DateTime<Utc>,
        /// Why.
        error: String,
    },
    /// Refused for good: moves to the dead letters.
    Rejected {
        /// Outbox row.
        id: i64,
        /// Why.
        reason: String,
    },
}

/// A refused change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Row id.
    pub id: i64,
    /// The change.
    pub item: OutboxItem,
    /// Why the destination refused it.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Segment and sync state.
#[async_trait]
pub trait SyncStore: Send + Sync {
    /// Current members of a segment.
    async fn segment_members(&self, segment: &str) -> StoreResult<BTreeSet<i64>>;
    /// Which of `profiles` are members of `segment` now.
    async fn members_among(&self, segment: &str, profiles: &[i64]) -> StoreResult<BTreeSet<i64>>;
    /// Applies membership changes (`true` entered, `false` exited) with their history; returns how many
    /// profiles entered and exited (changes that change nothing are ignored).
    async fn change_segment_members(
        &self,
        segment: &str,
        changes: &[(i64, bool)],
        at: DateTime<Utc>,
    ) -> StoreResult<(u64, u64)>;
    /// What a sync's destination holds: profile id → payload hash.
    async fn delivered(&self, sync: &str) -> StoreResult<HashMap<i64, String>>;
    /// The members of `segment` a sync's diff must read again, and the profiles that left (see
    /// [`DiffCandidates`]); valid only while the sync's field mapping is the one recorded.
    async fn diff_candidates(&self, sync: &str, segment: &str) -> StoreResult<DiffCandidates>;
    /// The stored documents of these profiles as JSON text, with their versions (`updated_at` in
    /// milliseconds): `(profile, version, document)`, for a diff that decodes only the parts it maps.
    /// Profiles that do not exist are left out.
    async fn member_documents(&self, profiles: &[i64]) -> StoreResult<Vec<(i64, i64, String)>>;
    /// Records that the destination's copy of these profiles is current as of these profile versions
    /// (their payload did not change), so the next diff skips them.
    async fn confirm_delivered(&self, sync: &str, versions: &[(i64, i64)]) -> StoreResult<()>;
    /// The hash of the field mapping a sync last planned with.
    async fn sync_mapping(&self, sync: &str) -> StoreResult<Option<String>>;
    /// Records the hash of the field mapping a sync planned with.
    async fn set_sync_mapping(&self, sync: &str, hash: &str) -> StoreResult<()>;
    /// Puts changes in the outbox, replacing any pending change of the same profile.
    async fn enqueue(
        &self,
        sync: &str,
        items: &[OutboxItem],
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Pending changes due at `now`, oldest first, at most `limit`.
    async fn due(&self, sync: &str, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<OutboxRow>>;
    /// How many changes are pending (due or not).
    async fn pending(&self, sync: &str) -> StoreResult<u64>;
    /// Records outcomes atomically (see the module doc).
    async fn settle(
        &self,
        sync: &str,
        settlements: &[Settlement],
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Refused changes of a sync, oldest first.
    async fn dead_letters(&self, sync: &str) -> StoreResult<Vec<DeadLetter>>;
    /// Gives every dead letter of a sync another chance: refused upserts are planned again by the next run
    /// (with the current mapping), refused removals go back to the outbox; returns how many.
    async fn replay_dead_letters(&self, sync: &str, now: DateTime<Utc>) -> StoreResult<u64>;
}

fn decode_item(row: &sqlx::any::AnyRow) -> StoreResult<OutboxItem> {
    Ok(OutboxItem {
        profile_id: row.try_get("profile_id")?,
        op: row.try_get("op")?,
        payload: row.try_get("payload")?,
        payload_hash: row.try_get("payload_hash")?,
        identifiers: row.try_get("identifiers")?,
        // Dead letters carry no version; an unknown version only means the next diff reads the profile.
        profile_version: row
            .try_get::<Option<i64>, _>("profile_version")
            .unwrap_or(None),
    })
}

/// The marker kept in `sync_delivered` for a refused payload, so the same payload is not sent again.
pub fn rejected_marker(hash: &str) -> String {
    format!("rejected:{hash}")
}

#[async_trait]
impl SyncStore for SqlStore {
    async fn segment_members(&self, segment: &str) -> StoreResult<BTreeSet<i64>> {
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT profile_id FROM segment_members WHERE segment = $1")
                .bind(segment)
                .fetch_all(self.pool())
                .await?;
        Ok(ids.into_iter().collect())
    }

    async fn member_documents(&self, profiles: &[i64]) -> StoreResult<Vec<(i64, i64, String)>> {
        let mut documents = Vec::with_capacity(profiles.len());
        for chunk in profiles.chunks(CHUNK) {
            let sql = format!(
                "SELECT id, updated_at, document FROM profiles WHERE id IN ({})",
                placeholders(self.backend(), 1, chunk.len(), 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(self.pool()).await? {
                documents.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
            }
        }
        Ok(documents)
    }

    async fn members_among(&self, segment: &str, profiles: &[i64]) -> StoreResult<BTreeSet<i64>> {
        let mut members = BTreeSet::new();
        for chunk in profiles.chunks(CHUNK) {
            let sql = format!(
                "SELECT profile_id FROM segment_members WHERE segment = {} AND profile_id IN ({})",
                param(self.backend(), 1),
                placeholders(self.backend(), 2, chunk.len(), 1)
            );
            let mut query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)).bind(segment);
            for id in chunk {
                query = query.bind(*id);
            }
            members.extend(query.fetch_all(self.pool()).await?);
        }
        Ok(members)
    }

    async fn change_segment_members(
        &self,
        segment: &str,
        changes: &[(i64, bool)],
        at: DateTime<Utc>,
    ) -> StoreResult<(u64, u64)> {
        let at = to_millis(at);
        let mut tx = self.begin_write().await?;
        let (mut entered, mut exited) = (0, 0);
        for (profile, member) in changes {
            if *member {
                let done = sqlx::query(
                    "INSERT INTO segment_members (segment, profile_id, entered_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(segment)
                .bind(*profile)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    continue;
                }
                entered += 1;
            } else {
                let done = sqlx::query(
                    "DELETE FROM segment_members WHERE segment = $1 AND profile_id = $2",
                )
                .bind(segment)
                .bind(*profile)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    continue;
                }
                exited += 1;
            }
            sqlx::query("INSERT INTO segment_history (segment, profile_id, change, at) VALUES ($1, $2, $3, $4)")
                .bind(segment)
                .bind(*profile)
                .bind(if *member { "entered" } else { "exited" })
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((entered, exited))
    }

    async fn delivered(&self, sync: &str) -> StoreResult<HashMap<i64, String>> {
        let rows =
            sqlx::query("SELECT profile_id, payload_hash FROM sync_delivered WHERE sync_id = $1")
                .bind(sync)
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn diff_candidates(&self, sync: &str, segment: &str) -> StoreResult<DiffCandidates> {
        let changed = sqlx::query(
            "SELECT m.profile_id, d.payload_hash FROM segment_members m \
             JOIN profiles p ON p.id = m.profile_id \
             LEFT JOIN sync_delivered d ON d.sync_id = $2 AND d.profile_id = m.profile_id \
             WHERE m.segment = $1 AND (d.profile_id IS NULL OR d.profile_version IS NULL OR d.profile_version <> p.updated_at) \
             ORDER BY m.profile_id",
        )
        .bind(segment)
        .bind(sync)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<StoreResult<Vec<_>>>()?;
        let departed = sqlx::query_scalar::<_, i64>(
            "SELECT d.profile_id FROM sync_delivered d WHERE d.sync_id = $2 AND NOT EXISTS \
             (SELECT 1 FROM segment_members m JOIN profiles p ON p.id = m.profile_id \
              WHERE m.segment = $1 AND m.profile_id = d.profile_id) \
             ORDER BY d.profile_id",
        )
        .bind(segment)
        .bind(sync)
        .fetch_all(self.pool())
        .await?;
        Ok(DiffCandidates { changed, departed })
    }

    async fn confirm_delivered(&self, sync: &str, versions: &[(i64, i64)]) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for (profile, version) in versions {
            sqlx::query(
                "UPDATE sync_delivered SET profile_version = $3 WHERE sync_id = $1 AND profile_id = $2",
            )
            .bind(sync)
            .bind(*profile)
            .bind(*version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn sync_mapping(&self, sync: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT mapping_hash FROM sync_mappings WHERE sync_id = $1")
                .bind(sync)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    async fn set_sync_mapping(&self, sync: &str, hash: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sync_mappings (sync_id, mapping_hash) VALUES ($1, $2) \
             ON CONFLICT (sync_id) DO UPDATE SET mapping_hash = excluded.mapping_hash",
        )
        .bind(sync)
        .bind(hash)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn enqueue(
        &self,
        sync: &str,
        items: &[OutboxItem],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let now = to_millis(now);
        let mut tx = self.begin_write().await?;
        for item in items {
            sqlx::query(
                "INSERT INTO sync_outbox (sync_id, profile_id, op, payload, payload_hash, identifiers, attempts, not_before, profile_version) \
                 VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8) \
                 ON CONFLICT (sync_id, profile_id) DO UPDATE SET op = excluded.op, payload = excluded.payload, \
                 payload_hash = excluded.payload_hash, identifiers = excluded.identifiers, \
                 profile_version = excluded.profile_version",
            )
            .bind(sync)
            .bind(item.profile_id)
            .bind(&item.op)
            .bind(&item.payload)
            .bind(&item.payload_hash)
            .bind(&item.identifiers)
            .bind(now)
            .bind(item.profile_version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(items.len() as u64)
    }

    async fn due(&self, sync: &str, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT id, profile_id, op, payload, payload_hash, identifiers, attempts, profile_version FROM sync_outbox \
             WHERE sync_id = $1 AND not_before <= $2 ORDER BY id LIMIT $3",
        )
        .bind(sync)
        .bind(to_millis(now))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxRow {
                    id: row.try_get("id")?,
                    item: decode_item(row)?,
                    attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn pending(&self, sync: &str) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sync_outbox WHERE sync_id = $1")
            .bind(sync)
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn settle(
        &self,
        sync: &str,
        settlements: &[Settlement],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let at = to_millis(now);
        let mut tx = self.begin_write().await?;
        for settlement in settlements {
            let id = match settlement {
                Settlement::Delivered { id }
                | Settlement::Retry { id, .. }
                | Settlement::Rejected { id, .. } => *id,
            };
            let row = sqlx::query(
                "SELECT id, profile_id, op, payload, payload_hash, identifiers, profile_version FROM sync_outbox WHERE id = $1 AND sync_id = $2",
            )
            .bind(id)
            .bind(sync)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { continue };
            let item = decode_item(&row)?;
            match settlement {
                Settlement::Retry {
                    not_before, error, ..
                } => {
                    sqlx::query("UPDATE sync_outbox SET attempts = attempts + 1, not_before = $2, last_error = $3 WHERE id = $1")
                        .bind(id)
                        .bind(to_millis(*not_before))
                        .bind(error)
                        .execute(&mut *tx)
                        .await?;
                    continue;
                }
                Settlement::Delivered { .. } if item.op == "remove" => {
                    sqlx::query(
                        "DELETE FROM sync_delivered WHERE sync_id = $1 AND profile_id = $2",
                    )
                    .bind(sync)
                    .bind(item.profile_id)
                    .execute(&mut *tx)
                    .await?;
                }
                Settlement::Delivered { .. } => {
                    upsert_delivered(&mut tx, sync, &item, &item.payload_hash, at).await?;
                }
                Settlement::Rejected { reason, .. } => {
                    sqlx::query(
                        "INSERT INTO sync_dead_letters (sync_id, profile_id, op, payload, payload_hash, identifiers, reason, at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(sync)
                    .bind(item.profile_id)
                    .bind(&item.op)
                    .bind(&item.payload)
                    .bind(&item.payload_hash)
                    .bind(&item.identifiers)
                    .bind(reason)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    if item.op == "upsert" {
                        // Remember the refused payload so the next diff does not send it again unchanged.
                        upsert_delivered(
                            &mut tx,
                            sync,
                            &item,
                            &rejected_marker(&item.payload_hash),
                            at,
                        )
                        .await?;
                    }
                }
            }
            sqlx::query("DELETE FROM sync_outbox WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn dead_letters(&self, sync: &str) -> StoreResult<Vec<DeadLetter>> {
        let rows = sqlx::query(
            "SELECT id, profile_id, op, payload, payload_hash, identifiers, reason, at FROM sync_dead_letters WHERE sync_id = $1 ORDER BY id",
        )
        .bind(sync)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    id: row.try_get("id")?,
                    item: decode_item(row)?,
                    reason: row.try_get("reason")?,
                    at: crate::sql::from_millis(row.try_get("at")?)?,
                })
            })
            .collect()
    }

    async fn replay_dead_letters(&self, sync: &str, now: DateTime<Utc>) -> StoreResult<u64> {
        let letters = self.dead_letters(sync).await?;
        let mut tx = self.begin_write().await?;
        for letter in &letters {
            if letter.item.op == "remove" {
                sqlx::query(
                    "INSERT INTO sync_outbox (sync_id, profile_id, op, payload, payload_hash, identifiers, attempts, not_before) \
                     VALUES ($1, $2, $3, $4, $5, $6, 0, $7) ON CONFLICT (sync_id, profile_id) DO NOTHING",
                )
                .bind(sync)
                .bind(letter.item.profile_id)
                .bind(&letter.item.op)
                .bind(&letter.item.payload)
                .bind(&letter.item.payload_hash)
                .bind(&letter.item.identifiers)
                .bind(to_millis(now))
                .execute(&mut *tx)
                .await?;
            } else {
                // Forget the refusal: the next run plans this member again with the current mapping.
                sqlx::query("DELETE FROM sync_delivered WHERE sync_id = $1 AND profile_id = $2 AND payload_hash LIKE 'rejected:%'")
                    .bind(sync)
                    .bind(letter.item.profile_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let ids: Vec<i64> = letters.iter().map(|l| l.id).collect();
        for chunk in ids.chunks(CHUNK) {
            let mut query = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM sync_dead_letters WHERE id IN ({})",
                placeholders(self.backend(), 1, chunk.len(), 1)
            )));
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(letters.len() as u64)
    }
}

async fn upsert_delivered(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    sync: &str,
    item: &OutboxItem,
    hash: &str,
    at: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sync_delivered (sync_id, profile_id, payload_hash, delivered_at, profile_version) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (sync_id, profile_id) DO UPDATE SET payload_hash = excluded.payload_hash, \
         delivered_at = excluded.delivered_at, profile_version = excluded.profile_version",
    )
    .bind(sync)
    .bind(item.profile_id)
    .bind(hash)
    .bind(at)
    .bind(item.profile_version)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
