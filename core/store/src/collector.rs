//! What the HTTP event collector needs from the store: a group commit of many sources' records, and the
//! counts behind `/readyz` and `/metrics`.
//!
//! Contract of [`SqlStore::apply_collected`]:
//! - every record of the call is written in **one transaction** (group commit): when it returns `Ok`, all
//!   of them are durable; on `Err`, none is;
//! - a record's `version` is the time it was received (milliseconds); a record whose key
//!   `(source, stream, external_id)` is already stored with a version inside the de-duplication window
//!   (`stored.version > record.version - window`), or appears earlier in the same call, is a
//!   [`CollectedOutcome::Duplicate`] and changes nothing. A key last stored longer ago than the window is
//!   replaced by the new record (a new change sequence, so identity resolution sees it again).

use std::collections::BTreeMap;

use chrono::Utc;
use spindle_model::RawRecord;
use sqlx::Row;

use crate::sql::{Payload, Prepared, existing_versions, insert_records, to_millis};
use crate::{SqlStore, StoreResult};

/// One record received by the collector, with the source its write key names.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectedRecord {
    /// Source id bound to the write key.
    pub source: String,
    /// The record; `version` is the receive time in milliseconds.
    pub record: RawRecord,
}

/// What happened to one collected record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectedOutcome {
    /// Written (new, or replacing a key last seen before the window).
    Stored,
    /// Already stored inside the de-duplication window (or earlier in the same call): nothing written.
    Duplicate,
}

/// Counts read at each `/metrics` scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Profiles.
    pub profiles: u64,
    /// Stored records per source, ordered by source.
    pub records_by_source: Vec<(String, u64)>,
    /// Members per segment, ordered by segment.
    pub segment_sizes: Vec<(String, u64)>,
}

/// What to do with one record after looking at the store.
enum Plan {
    Insert,
    Replace,
    Skip,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

impl SqlStore {
    /// Stores the collector's records in one transaction, de-duplicating by key within `window_ms`; returns
    /// one outcome per record, in order.
    pub async fn apply_collected(
        &self,
        records: Vec<CollectedRecord>,
        window_ms: i64,
    ) -> StoreResult<Vec<CollectedOutcome>> {
        let total = records.len();
        let mut outcomes = vec![CollectedOutcome::Duplicate; total];
        if total == 0 {
            return Ok(outcomes);
        }
        let now = to_millis(Utc::now());
        // Per source: the records (ready to write) and their positions in the call.
        let mut by_source: BTreeMap<String, (Vec<usize>, Vec<Prepared>)> = BTreeMap::new();
        for (index, collected) in records.into_iter().enumerate() {
            let record = collected.record;
            let payload = serde_json::to_string(&Payload {
                identifiers: record.identifiers,
                traits: record.traits,
                events: record.events,
            })?;
            let entry = by_source.entry(collected.source).or_default();
            entry.0.push(index);
            entry.1.push(Prepared {
                stream: record.stream,
                external_id: record.external_id,
                version: record.version,
                updated_at: record.updated_at.map(to_millis),
                deleted: i64::from(record.deleted),
                payload,
            });
        }

        let mut tx = self.begin_write().await?;
        // Reserve a sequence number per record first: the counter row serialises writers (see
        // `apply_source_batch`), so the look-ups below cannot race another writer's inserts. Duplicates leave
        // gaps, which the sequence allows.
        let reserve = i64::try_from(total).unwrap_or(i64::MAX);
        let top: i64 = sqlx::query_scalar(
            "UPDATE counters SET value = value + $1 WHERE name = 'record_seq' RETURNING value",
        )
        .bind(reserve)
        .fetch_one(&mut *tx)
        .await?;
        let mut next_seq = top - reserve;

        for (source, (indices, prepared)) in &by_source {
            let mut known = existing_versions(&mut tx, source, &prepared[..]).await?;
            let mut inserts: Vec<(i64, &Prepared)> = Vec::new();
            for (index, record) in indices.iter().zip(prepared) {
                let key = (record.stream.clone(), record.external_id.clone());
                let plan = match known.get(&key) {
                    None => Plan::Insert,
                    Some(stored)
                        if stored.pending_insert
                            || stored.version > record.version.saturating_sub(window_ms) =>
                    {
                        Plan::Skip
                    }
                    Some(_) => Plan::Replace,
                };
                match plan {
                    Plan::Skip => continue,
                    Plan::Insert => {
                        next_seq += 1;
                        inserts.push((next_seq, record));
                    }
                    Plan::Replace => {
                        next_seq += 1;
                        sqlx::query(
                            "UPDATE raw_records SET seq = $4, version = $5, updated_at = $6, deleted = $7, payload = $8, observed_at = $9 \
                             WHERE source = $1 AND stream = $2 AND external_id = $3",
                        )
                        .bind(source)
                        .bind(&record.stream)
                        .bind(&record.external_id)
                        .bind(next_seq)
                        .bind(record.version)
                        .bind(record.updated_at)
                        .bind(record.deleted)
                        .bind(&record.payload)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                outcomes[*index] = CollectedOutcome::Stored;
                // Later records of this call with the same key are duplicates of this one.
                known.insert(
                    key,
                    crate::sql::Known {
                        version: record.version,
                        payload: String::new(),
                        deleted: record.deleted,
                        pending_insert: true,
                    },
                );
            }
            insert_records(&mut tx, source, now, &inserts).await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// The newest schema version applied to this store (compare with [`crate::latest_version`]).
    pub async fn schema_version(&self) -> StoreResult<i64> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(self.pool())
                .await?;
        Ok(version.unwrap_or_default())
    }

    /// Profiles, records per source and segment sizes.
    pub async fn store_counts(&self) -> StoreResult<StoreCounts> {
        let profiles: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM profiles")
            .fetch_one(self.pool())
            .await?;
        let pairs = |rows: Vec<sqlx::any::AnyRow>| -> StoreResult<Vec<(String, u64)>> {
            rows.iter()
                .map(|row| Ok((row.try_get::<String, _>(0)?, count(row.try_get(1)?))))
                .collect()
        };
        let records =
            sqlx::query("SELECT source, COUNT(*) FROM raw_records GROUP BY source ORDER BY source")
                .fetch_all(self.pool())
                .await?;
        let segments = sqlx::query(
            "SELECT segment, COUNT(*) FROM segment_members GROUP BY segment ORDER BY segment",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(StoreCounts {
            profiles: count(profiles),
            records_by_source: pairs(records)?,
            segment_sizes: pairs(segments)?,
        })
    }
}
