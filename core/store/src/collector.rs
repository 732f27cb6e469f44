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

use std::collections::{BTreeMap, HashSet};

use chrono::Utc;
use spindle_model::RawRecord;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::sql::{Prepared, begin_write_on, count, to_millis};
use crate::sql::{param, placeholders};
use crate::{Backend, ProfileStore, SqlStore, StoreError, StoreResult};

/// A pooled connection that the collector's writer keeps from one group commit to the next
/// ([`SqlStore::collector_connection`]).
#[derive(Debug)]
pub struct CollectorConnection(sqlx::pool::PoolConnection<sqlx::Any>);

/// One record received by the collector, with the source its write key names, encoded for the store.
///
/// Encoding happens in [`CollectedRecord::new`], so that request handlers do it concurrently and the group
/// commit only writes.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectedRecord {
    source: String,
    row: Prepared,
}

impl CollectedRecord {
    /// Encodes `record` (whose `version` is the receive time in milliseconds) for `source`.
    pub fn new(source: impl Into<String>, record: RawRecord) -> StoreResult<Self> {
        Ok(Self {
            source: source.into(),
            row: Prepared::encode(record)?,
        })
    }

    /// The source id.
    pub fn source(&self) -> &str {
        &self.source
    }
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

/// Rows per multi-row upsert (10 parameters each, plus the window); full chunks reuse one cached statement.
///
/// On SQLite the statement uses positional `?` parameters (`sql::param`), like every statement built at run
/// time: sqlx binds a `$N` parameter by looking its name up in SQLite's list of names, which makes a
/// statement's cost grow with the square of its parameters (3,200 rows took ~400 ms in chunks of 1,000 and
/// ~50 ms in chunks of 20 with `$N`; ~25 ms with `?` at any chunk size from 20 to 200).
const UPSERT_CHUNK: usize = 50;

impl SqlStore {
    /// Stores the collector's records in one transaction, de-duplicating by key within `window_ms`; returns
    /// one outcome per record, in order.
    ///
    /// Each chunk is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE <older than the window>`, which writes
    /// exactly the records that are not duplicates, with no separate look-up. Every record gets its own
    /// sequence number, reserved for the call, and a written row carries it: when the statements wrote fewer
    /// rows than they were given, the stored records are the rows holding this call's sequence numbers
    /// (one range read on the `seq` index); otherwise every record was stored and nothing is read back.
    pub async fn apply_collected(
        &self,
        records: Vec<CollectedRecord>,
        window_ms: i64,
    ) -> StoreResult<Vec<CollectedOutcome>> {
        let mut conn = self.collector_connection().await?;
        self.apply_collected_on(&mut conn, records, window_ms).await
    }

    /// A connection of this store's pool for a writer that calls [`SqlStore::apply_collected_on`] again
    /// and again (see there). Dropping it gives it back to the pool.
    pub async fn collector_connection(&self) -> StoreResult<CollectorConnection> {
        Ok(CollectorConnection(self.pool().acquire().await?))
    }

    /// Whether a writer may keep a [`CollectorConnection`] between calls: not when the pool holds a single
    /// connection, which everything else needs too.
    pub fn can_keep_a_connection(&self) -> bool {
        self.pool().options().get_max_connections() > 1
    }

    /// [`SqlStore::apply_collected`] on `conn`, which the caller keeps from one call to the next.
    ///
    /// A writer that runs one transaction after another should keep its connection: SQLite empties a
    /// connection's page cache whenever another connection wrote since it last read, and the pool hands
    /// out its idle connections in turn, so a writer taking any idle connection starts most transactions
    /// with a cold cache (about a third more time in its statements, measured at 300 records a commit).
    pub async fn apply_collected_on(
        &self,
        conn: &mut CollectorConnection,
        records: Vec<CollectedRecord>,
        window_ms: i64,
    ) -> StoreResult<Vec<CollectedOutcome>> {
        let conn: &mut AnyConnection = &mut conn.0;
        let total = records.len();
        let mut outcomes = vec![CollectedOutcome::Duplicate; total];
        if total == 0 {
            return Ok(outcomes);
        }
        let now = to_millis(Utc::now());
        // A key repeated in the call is a duplicate of its first occurrence (one statement may not touch a
        // row twice).
        let first: Vec<bool> = {
            let mut seen: HashSet<(&str, &str, &str)> = HashSet::with_capacity(total);
            records
                .iter()
                .map(|c| seen.insert((&c.source, &c.row.stream, &c.row.external_id)))
                .collect()
        };
        // Per source, the records to write with their positions in the call (moved, so that binding them
        // copies no text).
        let mut by_source: BTreeMap<String, Vec<(usize, Prepared)>> = BTreeMap::new();
        for (index, (collected, first)) in records.into_iter().zip(first).enumerate() {
            if first {
                by_source
                    .entry(collected.source)
                    .or_default()
                    .push((index, collected.row));
            }
        }

        let mut tx = begin_write_on(conn, self.backend()).await?;
        // Reserve a sequence number per record first: the counter row serialises writers (see
        // `apply_source_batch`). Duplicates leave gaps, which the sequence allows.
        let reserve = i64::try_from(total).unwrap_or(i64::MAX);
        let top: i64 = sqlx::query_scalar(
            "UPDATE counters SET value = value + $1 WHERE name = 'record_seq' RETURNING value",
        )
        .bind(reserve)
        .fetch_one(&mut *tx)
        .await?;
        let first_seq = top - reserve + 1;

        let mut offered = Vec::with_capacity(total);
        let mut written = 0;
        for (source, rows) in by_source {
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                let chunk: Vec<(usize, Prepared)> = rows.by_ref().take(UPSERT_CHUNK).collect();
                let sql = format!(
                    "INSERT INTO raw_records (source, stream, external_id, seq, version, updated_at, deleted, payload, first_seen_at, observed_at) \
                     VALUES {} \
                     ON CONFLICT (source, stream, external_id) DO UPDATE SET seq = excluded.seq, version = excluded.version, \
                     updated_at = excluded.updated_at, deleted = excluded.deleted, payload = excluded.payload, observed_at = excluded.observed_at \
                     WHERE raw_records.version <= excluded.version - {}",
                    placeholders(self.backend(), 1, chunk.len(), 10),
                    param(self.backend(), chunk.len() * 10 + 1)
                );
                let mut query = sqlx::query(AssertSqlSafe(sql));
                for (index, record) in chunk {
                    offered.push(index);
                    query = query
                        .bind(source.as_str())
                        .bind(record.stream)
                        .bind(record.external_id)
                        .bind(first_seq + i64::try_from(index).unwrap_or(i64::MAX))
                        .bind(record.version)
                        .bind(record.updated_at)
                        .bind(record.deleted)
                        .bind(record.payload)
                        .bind(now)
                        .bind(now);
                }
                // Inserted rows and rows replaced by the `DO UPDATE` count; rows its `WHERE` kept do not.
                written += query
                    .bind(window_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
        }
        if written == offered.len() as u64 {
            for index in offered {
                outcomes[index] = CollectedOutcome::Stored;
            }
        } else {
            let stored: Vec<i64> =
                sqlx::query_scalar("SELECT seq FROM raw_records WHERE seq >= $1 AND seq <= $2")
                    .bind(first_seq)
                    .bind(top)
                    .fetch_all(&mut *tx)
                    .await?;
            for seq in stored {
                let index = usize::try_from(seq - first_seq).map_err(|_| {
                    StoreError::Corrupt(format!("record sequence {seq} outside the reserved range"))
                })?;
                if let Some(outcome) = outcomes.get_mut(index) {
                    *outcome = CollectedOutcome::Stored;
                }
            }
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Copies the write-ahead log into the database file without waiting for, or blocking, readers and
    /// writers (SQLite's `PRAGMA wal_checkpoint(PASSIVE)`); does nothing on PostgreSQL, which has no such
    /// log.
    ///
    /// SQLite checkpoints on its own once the log passes 1,000 pages, inside the transaction that commits
    /// then (which makes that commit wait for the copy and an `fsync` of the database file). Calling this
    /// from a task of its own while a writer is busy does most of that work off the writer's path, so the
    /// automatic checkpoint finds little left to copy.
    pub async fn checkpoint_wal(&self) -> StoreResult<()> {
        if self.backend() != Backend::Sqlite {
            return Ok(());
        }
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(self.pool())
            .await?;
        let (wal_frames, checkpointed): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
        tracing::trace!(wal_frames, checkpointed, "WAL checkpoint");
        Ok(())
    }

    /// The newest schema version applied to this store (compare with [`crate::latest_version`]).
    pub async fn schema_version(&self) -> StoreResult<i64> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(self.pool())
                .await?;
        Ok(version.unwrap_or_default())
    }

    /// Profiles, records per source and segment sizes. Counted from indexes, through the SQLite reader
    /// (which maps nothing: counts scan index pages all over the file).
    pub async fn store_counts(&self) -> StoreResult<StoreCounts> {
        let profiles = crate::IdentityStore::count_profiles(self).await?;
        let pairs = |rows: Vec<(String, i64)>| -> Vec<(String, u64)> {
            rows.into_iter().map(|(name, n)| (name, count(n))).collect()
        };
        let records = self
            .select::<_, (String, i64)>(
                "SELECT source, COUNT(*) FROM raw_records GROUP BY source ORDER BY source"
                    .to_owned(),
                (),
            )
            .await?;
        let segments = self
            .select::<_, (String, i64)>(
                "SELECT segment, COUNT(*) FROM segment_members GROUP BY segment ORDER BY segment"
                    .to_owned(),
                (),
            )
            .await?;
        Ok(StoreCounts {
            profiles,
            records_by_source: pairs(records),
            segment_sizes: pairs(segments),
        })
    }
}
