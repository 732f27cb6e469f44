//! The one implementation of [`ProfileStore`], over sqlx's `Any` driver.
//!
//! Both backends run the same statements: they are written in the SQL that SQLite and PostgreSQL share
//! (`$N` parameters, `ON CONFLICT`, `RETURNING`), and only the DDL in the migrations differs per backend. This
//! keeps a single code path to test and makes a second backend a matter of migrations, not of code. The
//! one exception is how some reads reach SQLite: those that move many rows (records, and identity's
//! lookups) run the same statements through SQLite's own interface ([`crate::sqlite_reader`]), which is
//! several times faster than sqlx's SQLite driver.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};
use spindle_model::{
    ApplyReport, AuditEntry, Cursor, Event, Identifier, JobCounts, JobId, JobKind, JobRun,
    JobRunId, JobStatus, JobTrigger, NewAuditEntry, QuarantinedRecord, RawRecord, RecordKey,
    StoredRecord,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Executor, Row};

use crate::sqlite_reader::SqliteReader;
use crate::{
    Backend, OpenOptions, ProfileStore, SourceBatch, StoreError, StoreResult, StoreUrl,
    StoredQuarantine, migrations,
};

/// How a write transaction begins on SQLite: taking the write lock up front, so that a concurrent writer
/// waits (busy timeout) instead of failing when its read lock is upgraded.
const SQLITE_BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// [`SqlStore::begin_write`] on a connection the caller holds.
pub(crate) async fn begin_write_on(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
) -> StoreResult<sqlx::Transaction<'_, sqlx::Any>> {
    Ok(match backend {
        Backend::Sqlite => sqlx::Connection::begin_with(conn, SQLITE_BEGIN_WRITE).await?,
        Backend::Postgres => sqlx::Connection::begin(conn).await?,
    })
}

/// How every SQLite connection of the pool commits: synced to disk, checkpointing the write-ahead log
/// past 1,000 pages (4 MiB, SQLite's default), with temporary files as SQLite was built to keep them
/// (a derived write may keep them in memory meanwhile).
const POOL_DURABILITY: &str =
    "PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 1000; PRAGMA temp_store = DEFAULT";
/// How a connection for derived writes commits (see [`SqlStore::derived_write_connection`]).
const DERIVED_DURABILITY: &str = "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 65536";

/// A [`ProfileStore`] on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    url: StoreUrl,
    /// Reads that move many rows, on SQLite (see [`SqliteReader`]).
    reader: Option<SqliteReader>,
    /// How many checkpoints started after resolution writes are still running
    /// ([`settle_checkpoints`](Self::settle_checkpoints)).
    checkpoints: Arc<tokio::sync::watch::Sender<usize>>,
}

/// A running checkpoint, counted until dropped ([`SqlStore::settle_checkpoints`]).
pub(crate) struct CheckpointRunning(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for CheckpointRunning {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count -= 1);
    }
}

/// The part of a record that is stored as JSON; the key and version live in their own columns.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Payload {
    pub(crate) identifiers: Vec<Identifier>,
    pub(crate) traits: std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) events: Vec<Event>,
}

impl SqlStore {
    /// Opens (creating if needed) the store at `url` and runs pending migrations.
    pub async fn open(url: &StoreUrl, options: &OpenOptions) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let connect_error = |source| StoreError::Connect {
            target: url.redacted().to_owned(),
            source,
        };
        let mut reader = None;
        let (connection_url, session_setup) = match url.backend() {
            Backend::Sqlite => {
                let path = url
                    .sqlite_path()
                    .ok_or_else(|| StoreError::Corrupt("sqlite url without path".into()))?;
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                        context: format!("cannot create the store folder {}", parent.display()),
                        source,
                    })?;
                }
                let setup = vec![
                    "PRAGMA journal_mode = WAL".to_owned(),
                    format!("PRAGMA busy_timeout = {}", options.busy_timeout.as_millis()),
                    "PRAGMA foreign_keys = ON".to_owned(),
                    POOL_DURABILITY.to_owned(),
                    // A write-ahead log grown by a large write shrinks back to 64 MiB once copied.
                    "PRAGMA journal_size_limit = 67108864".to_owned(),
                    // 32 MiB of page cache per connection, and reads through a memory map of up to
                    // 512 MiB of the file: scattered reads of profiles (a sync's diff, a resolution step)
                    // otherwise cost a system call and a copy per page. Mapped pages count in the
                    // process's resident memory; a larger map made a sync's diff faster (1.1 s instead of
                    // 1.65 s for 500,000 members) but took a rebuild of a million records past 1.5 GB.
                    "PRAGMA cache_size = -32768".to_owned(),
                    "PRAGMA mmap_size = 536870912".to_owned(),
                ];
                reader = Some(SqliteReader::new(path, options.busy_timeout));
                (format!("sqlite://{}?mode=rwc", path.display()), setup)
            }
            Backend::Postgres => {
                let mut setup = Vec::new();
                if let Some(schema) = url.schema() {
                    // The name was checked by `validate_schema_name`: plain lowercase identifier, no quoting needed.
                    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(
                        url.expose_connection_url(),
                    )
                    .await
                    .map_err(connect_error)?;
                    conn.execute(AssertSqlSafe(format!(
                        "CREATE SCHEMA IF NOT EXISTS {schema}"
                    )))
                    .await
                    .map_err(connect_error)?;
                    setup.push(format!("SET search_path TO {schema}"));
                }
                (url.expose_connection_url().to_owned(), setup)
            }
        };
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .after_connect(move |conn, _meta| {
                let setup = session_setup.clone();
                Box::pin(async move {
                    for statement in setup {
                        conn.execute(AssertSqlSafe(statement)).await?;
                    }
                    Ok(())
                })
            })
            .connect(&connection_url)
            .await
            .map_err(connect_error)?;
        migrations::run(&pool, url).await?;
        tracing::debug!(store = %url.redacted(), backend = url.backend().as_str(), "store opened");
        Ok(Self {
            pool,
            url: url.clone(),
            reader,
            checkpoints: Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    /// Connects without migrating or writing and runs `SELECT 1`: a read-only reachability check.
    pub async fn probe(url: &StoreUrl) -> StoreResult<()> {
        sqlx::any::install_default_drivers();
        let connect_error = |source| StoreError::Connect {
            target: url.redacted().to_owned(),
            source,
        };
        let connection_url = match url.sqlite_path() {
            Some(path) => format!("sqlite://{}?mode=ro", path.display()),
            None => url.expose_connection_url().to_owned(),
        };
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&connection_url)
            .await
            .map_err(connect_error)?;
        sqlx::query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(connect_error)?;
        sqlx::Connection::close(conn).await.map_err(connect_error)?;
        Ok(())
    }

    /// The location of this store.
    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// The connection pool, for crates that add their own tables through migrations.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The direct reader of a SQLite store (`None` on PostgreSQL).
    pub(crate) fn sqlite_reader(&self) -> Option<&SqliteReader> {
        self.reader.as_ref()
    }

    /// Closes every connection, waiting for running statements and checkpoints.
    pub async fn close(&self) {
        self.settle_checkpoints().await;
        self.pool.close().await;
    }

    /// Waits until every checkpoint started after a resolution's last write has finished (SQLite; at
    /// once on PostgreSQL). Such a checkpoint copies the write-ahead log into the database file beside
    /// whatever comes next; after a full pass it copies every document written (about a second for a
    /// million records), and work started meanwhile shares the machine with it.
    pub async fn settle_checkpoints(&self) {
        let mut running = self.checkpoints.subscribe();
        // The sender lives as long as the store: waiting cannot fail.
        let _ = running.wait_for(|count| *count == 0).await;
    }

    /// Counts a checkpoint in until the returned guard is dropped.
    pub(crate) fn checkpoint_running(&self) -> CheckpointRunning {
        self.checkpoints.send_modify(|count| *count += 1);
        CheckpointRunning(Arc::clone(&self.checkpoints))
    }

    pub(crate) async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.url.backend() {
            Backend::Sqlite => self.pool.begin_with(SQLITE_BEGIN_WRITE).await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// A connection for writes of **derived** state, which the store can compute again from what it
    /// holds (identity resolution's profiles, members and identifiers, with the high-water mark that says
    /// how far they go). On SQLite its commits do not wait for the write-ahead log to reach the disk
    /// (`synchronous = NORMAL`), and they do not themselves copy the log into the database file before it
    /// holds 256 MiB (rather than 4 MiB; other writers' commits still do at 4 MiB), plus once after a
    /// resolution's last write ([`DerivedWriteConnection::checkpoint`], which runs beside whatever comes
    /// next; that write's own commit never checkpoints). Resolution rewrites many of the same index pages
    /// in each chunk, and fewer checkpoints copy each page fewer times; leaving every checkpoint to the
    /// end was slower, since pages still in the log are read from it with a system call each rather than
    /// through the memory map.
    ///
    /// Such commits are atomic and ordered like every other commit, but a power cut may undo the last of
    /// them, which resolution then redoes, since the high-water mark goes back with them. A later commit
    /// of any other write (all `synchronous = FULL`) syncs the log, and with it every derived commit
    /// before it, so no write stored after reading derived state (a sync's outbox, say) can outlive it.
    /// What a power cut can lose is what was only shown: a profile id created by a lost commit and seen
    /// meanwhile through the API is not given again (the id counter is durable), so that id stops
    /// answering and the customer gets a new one. On PostgreSQL it is a plain connection.
    pub(crate) async fn derived_write_connection(&self) -> StoreResult<DerivedWriteConnection> {
        let mut connection = DerivedWriteConnection {
            conn: self.pool.acquire().await?,
            backend: self.url.backend(),
            restored: true,
        };
        if connection.backend == Backend::Sqlite {
            connection.restored = false;
            connection.conn.execute(DERIVED_DURABILITY).await?;
        }
        Ok(connection)
    }
}

/// A pooled connection set up for derived writes (see [`SqlStore::derived_write_connection`]). Give it
/// back with [`release`](Self::release), which restores the pool's durability setting; a connection
/// dropped without it (an error, a cancelled future) is closed instead of returning to the pool, so no
/// other write ever runs with the relaxed setting.
#[derive(Debug)]
pub(crate) struct DerivedWriteConnection {
    conn: sqlx::pool::PoolConnection<sqlx::Any>,
    backend: Backend,
    /// True once the connection holds the pool's settings again.
    restored: bool,
}

impl DerivedWriteConnection {
    /// Begins the write transaction as every writer does.
    pub(crate) async fn begin(&mut self) -> StoreResult<sqlx::Transaction<'_, sqlx::Any>> {
        begin_write_on(&mut self.conn, self.backend).await
    }

    /// Keeps statement journals in memory (SQLite; nothing on PostgreSQL) until the connection is
    /// released: each multi-row statement of an incremental step's write copies every page it changes
    /// into one, which past 64 KiB SQLite otherwise writes to a temporary file, a system call per page.
    pub(crate) async fn journal_statements_in_memory(&mut self) -> StoreResult<()> {
        if self.backend == Backend::Sqlite {
            self.conn.execute("PRAGMA temp_store = MEMORY").await?;
        }
        Ok(())
    }

    /// Leaves every checkpoint to [`checkpoint`](Self::checkpoint) (SQLite; nothing on PostgreSQL): a
    /// resolution's last write, which is followed by one, does not also wait for one in its commit.
    pub(crate) async fn defer_checkpoints(&mut self) -> StoreResult<()> {
        if self.backend == Backend::Sqlite {
            self.conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
        }
        Ok(())
    }

    /// Copies the write-ahead log into the database file as far as readers and writers allow (SQLite;
    /// nothing on PostgreSQL): a resolution calls it after its last write, so the log it leaves is short.
    /// Returns whether the whole log was copied (readers of older snapshots, or a writer's checkpoint,
    /// can leave part of it for the next one).
    pub(crate) async fn checkpoint(&mut self) -> StoreResult<bool> {
        if self.backend != Backend::Sqlite {
            return Ok(true);
        }
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *self.conn)
            .await?;
        let (busy, log, copied): (i64, i64, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        Ok(busy == 0 && copied == log)
    }

    /// Restores the pool's durability setting and returns the connection to the pool (or closes it when
    /// the setting cannot be restored).
    pub(crate) async fn release(mut self) {
        if !self.restored {
            self.restored = self.conn.execute(POOL_DURABILITY).await.is_ok();
        }
    }
}

impl Drop for DerivedWriteConnection {
    fn drop(&mut self) {
        if !self.restored {
            self.conn.close_on_drop();
        }
    }
}

pub(crate) fn to_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> StoreResult<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} ms is out of range")))
}

/// How much of a record's payload to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadParts {
    /// Identifiers, traits and events.
    Whole,
    /// Identifiers and traits; no events.
    WithoutEvents,
    /// Identifiers only.
    Identifiers,
}

/// The payload without its events: serde skips them without building them.
#[derive(serde::Deserialize)]
struct PayloadWithoutEvents {
    identifiers: Vec<Identifier>,
    traits: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The payload's identifiers alone.
#[derive(serde::Deserialize)]
struct PayloadIdentifiers {
    identifiers: Vec<Identifier>,
}

pub(crate) fn decode_record(row: &AnyRow) -> StoreResult<StoredRecord> {
    any_record_columns(row)?.decode(PayloadParts::Whole)
}

/// At most `$2` records changed after the change sequence `$1`, in change order.
pub(crate) fn records_after_seq_sql() -> String {
    format!("SELECT {RECORD_COLUMNS} FROM raw_records WHERE seq > $1 ORDER BY seq LIMIT $2")
}

/// A count as SQL gives it (never negative).
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

/// The [`RECORD_COLUMNS`] of a row of the pool.
pub(crate) fn any_record_columns(row: &AnyRow) -> StoreResult<RecordColumns<'_>> {
    Ok(RecordColumns {
        seq: row.try_get("seq")?,
        source: row.try_get("source")?,
        stream: row.try_get("stream")?,
        external_id: row.try_get("external_id")?,
        version: row.try_get("version")?,
        updated_at: row.try_get("updated_at")?,
        deleted: row.try_get::<i64, _>("deleted")? != 0,
        payload: row.try_get("payload")?,
        first_seen_at: row.try_get("first_seen_at")?,
        observed_at: row.try_get("observed_at")?,
    })
}

/// The columns of a stored record ([`RECORD_COLUMNS`]) as a driver hands them over, before the payload
/// is decoded: one decoding for every way records are read.
pub(crate) struct RecordColumns<'r> {
    pub(crate) seq: i64,
    pub(crate) source: String,
    pub(crate) stream: String,
    pub(crate) external_id: String,
    pub(crate) version: i64,
    /// Milliseconds.
    pub(crate) updated_at: Option<i64>,
    pub(crate) deleted: bool,
    /// The payload's JSON text.
    pub(crate) payload: &'r str,
    /// Milliseconds.
    pub(crate) first_seen_at: i64,
    /// Milliseconds.
    pub(crate) observed_at: i64,
}

impl RecordColumns<'_> {
    /// The record, with only `parts` of its payload decoded (the rest left empty).
    pub(crate) fn decode(self, parts: PayloadParts) -> StoreResult<StoredRecord> {
        let payload = decode_payload(self.payload, parts)?;
        Ok(StoredRecord {
            seq: self.seq,
            source: self.source,
            first_seen_at: from_millis(self.first_seen_at)?,
            observed_at: from_millis(self.observed_at)?,
            record: RawRecord {
                stream: self.stream,
                external_id: self.external_id,
                version: self.version,
                updated_at: self.updated_at.map(from_millis).transpose()?,
                deleted: self.deleted,
                identifiers: payload.identifiers,
                traits: payload.traits,
                events: payload.events,
            },
        })
    }

    /// The record with its payload left as JSON text.
    pub(crate) fn encoded(self) -> EncodedRecord {
        EncodedRecord {
            source: self.source,
            stream: self.stream,
            external_id: self.external_id,
            body: EncodedBody {
                seq: self.seq,
                version: self.version,
                updated_at: self.updated_at,
                deleted: self.deleted,
                payload: self.payload.into(),
                first_seen_at: self.first_seen_at,
                observed_at: self.observed_at,
            },
        }
    }
}

/// `parts` of a payload's JSON `text` (the rest left empty).
fn decode_payload(text: &str, parts: PayloadParts) -> StoreResult<Payload> {
    Ok(match parts {
        PayloadParts::Whole => serde_json::from_str(text)?,
        PayloadParts::WithoutEvents => {
            let lean: PayloadWithoutEvents = serde_json::from_str(text)?;
            Payload {
                identifiers: lean.identifiers,
                traits: lean.traits,
                events: Vec::new(),
            }
        }
        PayloadParts::Identifiers => {
            let lean: PayloadIdentifiers = serde_json::from_str(text)?;
            Payload {
                identifiers: lean.identifiers,
                traits: Default::default(),
                events: Vec::new(),
            }
        }
    })
}

/// A stored record as read, its payload still JSON text: identity resolution's full pass reads every
/// record once, decodes the identifiers of each to resolve, keeps the [`EncodedBody`] (about the size of
/// the stored payload) and decodes it in full when it builds the record's profile, instead of reading
/// the record again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRecord {
    /// Source id.
    pub source: String,
    /// Stream.
    pub stream: String,
    /// Id at the source.
    pub external_id: String,
    /// Everything else.
    pub body: EncodedBody,
}

/// An [`EncodedRecord`] without its key (the default: an empty payload, which does not decode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedBody {
    seq: i64,
    version: i64,
    /// Milliseconds.
    updated_at: Option<i64>,
    deleted: bool,
    payload: Box<str>,
    /// Milliseconds.
    first_seen_at: i64,
    /// Milliseconds.
    observed_at: i64,
}

impl EncodedBody {
    /// The record's change sequence.
    pub fn seq(&self) -> i64 {
        self.seq
    }

    /// Whether the record was deleted at its source.
    pub fn deleted(&self) -> bool {
        self.deleted
    }

    /// The record whose key is `(source, stream, external_id)`, with only `parts` of its payload decoded
    /// (the rest left empty).
    pub fn decode(
        &self,
        (source, stream, external_id): (&str, &str, &str),
        parts: PayloadParts,
    ) -> StoreResult<StoredRecord> {
        RecordColumns {
            seq: self.seq,
            source: source.to_owned(),
            stream: stream.to_owned(),
            external_id: external_id.to_owned(),
            version: self.version,
            updated_at: self.updated_at,
            deleted: self.deleted,
            payload: &self.payload,
            first_seen_at: self.first_seen_at,
            observed_at: self.observed_at,
        }
        .decode(parts)
    }
}

impl EncodedRecord {
    /// [`EncodedBody::decode`] with this record's key.
    pub fn decode(&self, parts: PayloadParts) -> StoreResult<StoredRecord> {
        self.body
            .decode((&self.source, &self.stream, &self.external_id), parts)
    }
}

fn decode_run(row: &AnyRow) -> StoreResult<JobRun> {
    let kind = match row.try_get::<&str, _>("job_kind")? {
        "source" => JobKind::Source,
        "sync" => JobKind::Sync,
        "identity" => JobKind::Identity,
        other => return Err(StoreError::Corrupt(format!("unknown job kind `{other}`"))),
    };
    let trigger_text: &str = row.try_get("trigger")?;
    let status_text: &str = row.try_get("status")?;
    Ok(JobRun {
        id: row.try_get("id")?,
        job: JobId {
            kind,
            name: row.try_get("job_name")?,
        },
        trigger: JobTrigger::parse(trigger_text)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown job trigger `{trigger_text}`")))?,
        scheduled_for: from_millis(row.try_get("scheduled_for")?)?,
        started_at: from_millis(row.try_get("started_at")?)?,
        finished_at: row
            .try_get::<Option<i64>, _>("finished_at")?
            .map(from_millis)
            .transpose()?,
        status: JobStatus::parse(status_text)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown job status `{status_text}`")))?,
        error: row.try_get("error")?,
        counts: serde_json::from_str(row.try_get::<&str, _>("counts")?)?,
    })
}

fn decode_audit(row: &AnyRow) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: from_millis(row.try_get("at")?)?,
        entry: NewAuditEntry {
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            details: serde_json::from_str(row.try_get::<&str, _>("details")?)?,
        },
    })
}

pub(crate) const RECORD_COLUMNS: &str = "seq, source, stream, external_id, version, updated_at, deleted, payload, first_seen_at, observed_at";
const RUN_COLUMNS: &str = "id, job_kind, job_name, trigger, scheduled_for, started_at, finished_at, status, error, counts";

#[async_trait]
impl ProfileStore for SqlStore {
    fn backend(&self) -> Backend {
        self.url.backend()
    }

    async fn apply_source_batch(
        &self,
        source: &str,
        batch: SourceBatch,
    ) -> StoreResult<ApplyReport> {
        let now = to_millis(Utc::now());
        let mut report = ApplyReport::default();
        let mut tx = self.begin_write().await?;

        // Reserve one change sequence number per record up front. The counter row is also the writers' lock:
        // on PostgreSQL it serialises concurrent batches, so sequence numbers become visible in order and a
        // reader following `records_since` never skips a record that commits late.
        let reserve = i64::try_from(batch.records.len()).unwrap_or(i64::MAX);
        let top: i64 = sqlx::query_scalar(
            "UPDATE counters SET value = value + $1 WHERE name = 'record_seq' RETURNING value",
        )
        .bind(reserve)
        .fetch_one(&mut *tx)
        .await?;
        let mut next_seq = top - reserve;

        // What the store holds for the batch's keys, read in a few queries rather than one per record.
        let mut prepared = Vec::with_capacity(batch.records.len());
        for record in batch.records {
            prepared.push(Prepared::encode(record)?);
        }
        let mut known = existing_versions(&mut tx, self.backend(), source, &prepared).await?;

        let mut inserts: Vec<(i64, &Prepared)> = Vec::new();
        for record in &prepared {
            let key = (record.stream.clone(), record.external_id.clone());
            match known.get(&key) {
                None => {
                    next_seq += 1;
                    inserts.push((next_seq, record));
                    report.inserted += 1;
                }
                Some(stored) if record.version <= stored.version => {
                    report.unchanged += 1;
                    continue;
                }
                Some(stored)
                    if stored.payload == record.payload && stored.deleted == record.deleted =>
                {
                    // Newer version, same content: remember the version so the next read compares against it,
                    // but it is not a change downstream consumers need to see.
                    sqlx::query(
                        "UPDATE raw_records SET version = $4, updated_at = $5 WHERE source = $1 AND stream = $2 AND external_id = $3",
                    )
                    .bind(source)
                    .bind(&record.stream)
                    .bind(&record.external_id)
                    .bind(record.version)
                    .bind(record.updated_at)
                    .execute(&mut *tx)
                    .await?;
                    report.unchanged += 1;
                }
                Some(stored) => {
                    next_seq += 1;
                    if stored.pending_insert {
                        // Inserted earlier in this batch: replace the pending row instead.
                        if let Some(slot) = inserts.iter_mut().find(|(_, r)| {
                            r.stream == record.stream && r.external_id == record.external_id
                        }) {
                            *slot = (next_seq, record);
                        }
                        report.updated += 1;
                    } else {
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
                        report.updated += 1;
                    }
                }
            }
            let pending_insert = known.get(&key).is_none_or(|k| k.pending_insert);
            known.insert(
                key,
                Known {
                    version: record.version,
                    payload: record.payload.clone(),
                    deleted: record.deleted,
                    pending_insert,
                },
            );
        }
        insert_records(&mut tx, self.backend(), source, now, &inserts).await?;

        for entry in batch.quarantined {
            let digest = hex::encode(Sha256::digest(entry.payload.as_bytes()));
            let inserted = sqlx::query(
                "INSERT INTO quarantine (source, stream, location, reason, payload, payload_sha256, quarantined_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (source, stream, location, payload_sha256) DO NOTHING",
            )
            .bind(source)
            .bind(&entry.stream)
            .bind(&entry.location)
            .bind(&entry.reason)
            .bind(&entry.payload)
            .bind(&digest)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            report.quarantined += inserted.rows_affected();
        }

        for cursor in batch.cursors {
            sqlx::query(
                "INSERT INTO source_cursors (source, stream, position, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (source, stream) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
            )
            .bind(source)
            .bind(&cursor.stream)
            .bind(serde_json::to_string(&cursor.position)?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(report)
    }

    async fn cursor(&self, source: &str, stream: &str) -> StoreResult<Option<Cursor>> {
        let row = sqlx::query(
            "SELECT stream, position FROM source_cursors WHERE source = $1 AND stream = $2",
        )
        .bind(source)
        .bind(stream)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| decode_cursor(&row)).transpose()
    }

    async fn cursors(&self, source: &str) -> StoreResult<Vec<Cursor>> {
        let rows = sqlx::query(
            "SELECT stream, position FROM source_cursors WHERE source = $1 ORDER BY stream",
        )
        .bind(source)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_cursor).collect()
    }

    async fn reset_cursors(&self, source: &str) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM source_cursors WHERE source = $1")
            .bind(source)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn record(&self, key: &RecordKey) -> StoreResult<Option<StoredRecord>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM raw_records WHERE source = $1 AND stream = $2 AND external_id = $3"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&key.source)
            .bind(&key.stream)
            .bind(&key.external_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_record).transpose()
    }

    async fn records_since(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<StoredRecord>> {
        self.select(records_after_seq_sql(), (after_seq, i64::from(limit)))
            .await
    }

    async fn count_records(&self, source: Option<&str>) -> StoreResult<u64> {
        // Two statements rather than `$1 IS NULL OR source = $1`, which SQLite answered by scanning the
        // key's index rather than the smaller one of change sequences. Through the SQLite reader, which
        // maps nothing: a count touches index pages all over the file, and through the pool's memory
        // map those (with the kernel's read-around) added about 200 MB per connection to the process's
        // resident memory.
        let n = match source {
            None => {
                self.select::<_, i64>("SELECT COUNT(*) FROM raw_records".to_owned(), ())
                    .await?
            }
            Some(source) => {
                self.select::<_, i64>(
                    "SELECT COUNT(*) FROM raw_records WHERE source = $1".to_owned(),
                    source.to_owned(),
                )
                .await?
            }
        };
        Ok(crate::identity::count_of(&n))
    }

    async fn quarantined(
        &self,
        source: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<StoredQuarantine>> {
        let rows = sqlx::query(
            "SELECT id, source, stream, location, reason, payload, quarantined_at FROM quarantine \
             WHERE $1 IS NULL OR source = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(source)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredQuarantine {
                    id: row.try_get("id")?,
                    source: row.try_get("source")?,
                    quarantined_at: from_millis(row.try_get("quarantined_at")?)?,
                    record: QuarantinedRecord {
                        stream: row.try_get("stream")?,
                        location: row.try_get("location")?,
                        reason: row.try_get("reason")?,
                        payload: row.try_get("payload")?,
                    },
                })
            })
            .collect()
    }

    async fn start_run(
        &self,
        job: &JobId,
        trigger: JobTrigger,
        scheduled_for: DateTime<Utc>,
        started_at: DateTime<Utc>,
    ) -> StoreResult<JobRunId> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO job_runs (job_kind, job_name, trigger, scheduled_for, started_at, status, counts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(job.kind.as_str())
        .bind(&job.name)
        .bind(trigger.as_str())
        .bind(to_millis(scheduled_for))
        .bind(to_millis(started_at))
        .bind(JobStatus::Running.as_str())
        .bind(serde_json::to_string(&JobCounts::default())?)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn finish_run(
        &self,
        run: JobRunId,
        status: JobStatus,
        error: Option<&str>,
        counts: JobCounts,
        finished_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let done = sqlx::query("UPDATE job_runs SET status = $2, error = $3, counts = $4, finished_at = $5 WHERE id = $1")
            .bind(run)
            .bind(status.as_str())
            .bind(error)
            .bind(serde_json::to_string(&counts)?)
            .bind(to_millis(finished_at))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Corrupt(format!("job run {run} does not exist")));
        }
        Ok(())
    }

    async fn last_run(&self, job: &JobId) -> StoreResult<Option<JobRun>> {
        Ok(self.runs(Some(job), 1).await?.into_iter().next())
    }

    async fn runs(&self, job: Option<&JobId>, limit: u32) -> StoreResult<Vec<JobRun>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM job_runs WHERE ($1 IS NULL OR (job_kind = $1 AND job_name = $2)) \
             ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(job.map(|j| j.kind.as_str()))
            .bind(job.map(|j| j.name.as_str()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_run).collect()
    }

    async fn mark_interrupted_runs(&self, at: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE job_runs SET status = $1, finished_at = $2, error = $3 WHERE status = $4",
        )
        .bind(JobStatus::Interrupted.as_str())
        .bind(to_millis(at))
        .bind("the daemon stopped before this run finished; the next run resumes from the last commit")
        .bind(JobStatus::Running.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<AuditEntry> {
        let at = Utc::now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO audit_log (at, actor, action, target, details) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(to_millis(at))
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(serde_json::to_string(&entry.details)?)
        .fetch_one(&self.pool)
        .await?;
        // Stored with millisecond precision; return what a later read would return.
        Ok(AuditEntry {
            id,
            at: from_millis(to_millis(at))?,
            entry,
        })
    }

    async fn audit_log(&self, after_id: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, details FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_audit).collect()
    }
}

/// A record ready to write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Prepared {
    pub(crate) stream: String,
    pub(crate) external_id: String,
    pub(crate) version: i64,
    pub(crate) updated_at: Option<i64>,
    pub(crate) deleted: i64,
    pub(crate) payload: String,
}

impl Prepared {
    /// Encodes a record's content (identifiers, traits, events) as the stored payload.
    pub(crate) fn encode(record: RawRecord) -> StoreResult<Self> {
        let payload = serde_json::to_string(&Payload {
            identifiers: record.identifiers,
            traits: record.traits,
            events: record.events,
        })?;
        Ok(Prepared {
            stream: record.stream,
            external_id: record.external_id,
            version: record.version,
            updated_at: record.updated_at.map(to_millis),
            deleted: i64::from(record.deleted),
            payload,
        })
    }
}

/// What is known of a key: stored, or written earlier in the same batch.
struct Known {
    version: i64,
    payload: String,
    deleted: i64,
    /// True when the row is still waiting in this batch's inserts.
    pending_insert: bool,
}

/// Keys per lookup query; well under both backends' parameter limits.
const LOOKUP_CHUNK: usize = 400;
/// Rows per multi-row insert (10 parameters each).
const INSERT_CHUNK: usize = 50;

/// Parameter `n` (1-based) of a statement built at run time. On SQLite it is a positional `?`: sqlx binds
/// a `$N` parameter by looking its name up in SQLite's list of names, so a statement's cost grows with the
/// square of its parameters (a 300-key `IN` list or a 50-row insert pays for it on every statement). A
/// statement built with these helpers must use them for every parameter, in binding order.
pub(crate) fn param(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_owned(),
        Backend::Postgres => format!("${n}"),
    }
}

/// `rows` tuples of `width` parameters numbered from `start` (bare parameters when `width` is 1), for
/// `IN (...)` lists and multi-row `VALUES`.
pub(crate) fn placeholders(backend: Backend, start: usize, rows: usize, width: usize) -> String {
    (0..rows)
        .map(|row| {
            let cells: Vec<String> = (0..width)
                .map(|col| param(backend, start + row * width + col))
                .collect();
            if width == 1 {
                cells.join("")
            } else {
                format!("({})", cells.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn existing_versions(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    source: &str,
    records: &[Prepared],
) -> StoreResult<HashMap<(String, String), Known>> {
    let mut by_stream: HashMap<&str, Vec<&str>> = HashMap::new();
    for record in records {
        by_stream
            .entry(record.stream.as_str())
            .or_default()
            .push(record.external_id.as_str());
    }
    let mut known = HashMap::new();
    for (stream, ids) in by_stream {
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            let sql = format!(
                "SELECT external_id, version, payload, deleted FROM raw_records \
                 WHERE source = {} AND stream = {} AND external_id IN ({})",
                param(backend, 1),
                param(backend, 2),
                placeholders(backend, 3, chunk.len(), 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(source).bind(stream);
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&mut **tx).await? {
                known.insert(
                    (stream.to_owned(), row.try_get::<String, _>(0)?),
                    Known {
                        version: row.try_get(1)?,
                        payload: row.try_get(2)?,
                        deleted: row.try_get(3)?,
                        pending_insert: false,
                    },
                );
            }
        }
    }
    Ok(known)
}

async fn insert_records(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    source: &str,
    now: i64,
    rows: &[(i64, &Prepared)],
) -> StoreResult<()> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let sql = format!(
            "INSERT INTO raw_records (source, stream, external_id, seq, version, updated_at, deleted, payload, first_seen_at, observed_at) VALUES {}",
            placeholders(backend, 1, chunk.len(), 10)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (seq, record) in chunk {
            query = query
                .bind(source)
                .bind(&record.stream)
                .bind(&record.external_id)
                .bind(*seq)
                .bind(record.version)
                .bind(record.updated_at)
                .bind(record.deleted)
                .bind(&record.payload)
                .bind(now)
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

fn decode_cursor(row: &AnyRow) -> StoreResult<Cursor> {
    Ok(Cursor {
        stream: row.try_get("stream")?,
        position: serde_json::from_str(row.try_get::<&str, _>("position")?)?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{OpenOptions, SqlStore, StoreUrl};

    async fn store(dir: &std::path::Path) -> SqlStore {
        let url = StoreUrl::parse("sqlite://store.db", dir, None).expect("url");
        SqlStore::open(&url, &OpenOptions::default())
            .await
            .expect("open")
    }

    #[tokio::test]
    async fn counting_profiles_reads_an_index_not_the_documents() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = store(dir.path()).await;
        let plan: String = sqlx::query("EXPLAIN QUERY PLAN SELECT COUNT(*) FROM profiles")
            .fetch_one(store.pool())
            .await
            .map(|row| sqlx::Row::get::<String, _>(&row, 3))
            .expect("a plan");
        assert!(
            plan.contains("COVERING INDEX profiles_by_creation"),
            "{plan}"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn settling_checkpoints_waits_for_every_running_one() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = store(dir.path()).await;
        // Nothing running: settles at once.
        tokio::time::timeout(Duration::from_secs(5), store.settle_checkpoints())
            .await
            .expect("no checkpoint runs");

        let (first, second) = (store.checkpoint_running(), store.checkpoint_running());
        let settling = tokio::spawn({
            let store = store.clone();
            async move { store.settle_checkpoints().await }
        });
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!settling.is_finished(), "one checkpoint still runs");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), settling)
            .await
            .expect("settled once both ended")
            .expect("the waiting task");
        store.close().await;
    }
}
