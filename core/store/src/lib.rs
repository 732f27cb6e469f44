//! The profile store: everything Spindle keeps, behind one trait with two backends.
//!
//! Contract:
//! - [`ProfileStore`] is the only way the rest of Spindle reads or writes durable state.
//! - Both backends, SQLite in one file (the embedded default) and PostgreSQL, pass the same conformance
//!   suite (`tests/conformance.rs`); code above this crate never branches on the backend.
//! - Every write that covers progress (a batch of records and the cursor after it) is one transaction:
//!   after a crash the store holds either both or neither.
//! - Versioned migrations (`migrations/<backend>/NNNN_name.sql`) run when a store is opened. A released
//!   migration is never edited; a change adds the next number for both backends.
//! - Timestamps are stored as milliseconds since the Unix epoch (UTC).
#![deny(missing_docs)]

mod admin;
mod backup;
mod collector;
mod error;
mod identity;
mod migrations;
mod profile_changes;
mod sync_state;
pub use migrations::latest_version;
mod sql;
mod sqlite_reader;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spindle_model::{
    ApplyReport, AuditEntry, Cursor, JobCounts, JobId, JobRun, JobRunId, JobStatus, JobTrigger,
    NewAuditEntry, QuarantinedRecord, RawRecord, RecordKey, StoredRecord,
};

pub use admin::{AdminStore, ApiSegment, ApiSegmentWrite};
pub use backup::{RestoreOptions, StoreLock, backup_sqlite, restore_sqlite};
pub use collector::{CollectedOutcome, CollectedRecord, CollectorConnection, StoreCounts};
pub use error::StoreError;
pub use identity::{
    AllRows, BuiltWith, HeldRows, IdentityStore, ProfileRow, ProfileWrite, ResolutionRows,
    ResolutionWrite, RowChanges, StagedRows,
};
pub use profile_changes::{KEEP as PROFILE_CHANGES_KEPT, ProfileChangeStore, ProfileChanges};
pub use spindle_config::store_url::{Backend, StoreUrl};
pub use sql::{EncodedBody, EncodedRecord, PayloadParts, SqlStore};
pub use sync_state::{
    DeadLetter, DiffCandidates, OutboxItem, OutboxRow, Settlement, SyncStore, rejected_marker,
};

/// Result type of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything a source run hands to the store in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceBatch {
    /// Records read in this batch.
    pub records: Vec<RawRecord>,
    /// Records that could not be read, with their reasons.
    pub quarantined: Vec<QuarantinedRecord>,
    /// Cursors to advance, committed together with the records they cover.
    pub cursors: Vec<Cursor>,
}

/// A quarantine entry as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredQuarantine {
    /// Entry id.
    pub id: i64,
    /// Source id.
    pub source: String,
    /// When it was quarantined.
    pub quarantined_at: DateTime<Utc>,
    /// The entry.
    pub record: QuarantinedRecord,
}

/// Options when opening a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Most connections the pool keeps.
    pub max_connections: u32,
    /// How long SQLite waits on a locked database before failing a statement.
    pub busy_timeout: std::time::Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Durable state of a Spindle installation.
///
/// Implementations must be safe to share between tasks; each method is atomic on its own.
#[async_trait]
pub trait ProfileStore: Send + Sync + std::fmt::Debug {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Applies a batch from `source` in one transaction: stores new records, replaces a record only with a
    /// strictly greater version whose content differs, keeps quarantined records (once per location and
    /// payload) and advances the given cursors.
    async fn apply_source_batch(
        &self,
        source: &str,
        batch: SourceBatch,
    ) -> StoreResult<ApplyReport>;

    /// The cursor of one stream, if it has one.
    async fn cursor(&self, source: &str, stream: &str) -> StoreResult<Option<Cursor>>;

    /// Every cursor of a source, ordered by stream.
    async fn cursors(&self, source: &str) -> StoreResult<Vec<Cursor>>;

    /// Forgets a source's cursors so the next run reads everything again (a full re-sync); returns how many
    /// were removed. Stored records stay and de-duplicate the re-read.
    async fn reset_cursors(&self, source: &str) -> StoreResult<u64>;

    /// One stored record.
    async fn record(&self, key: &RecordKey) -> StoreResult<Option<StoredRecord>>;

    /// Records changed after change sequence `after_seq`, oldest first, at most `limit`.
    async fn records_since(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<StoredRecord>>;

    /// How many records are stored, for one source or for all.
    async fn count_records(&self, source: Option<&str>) -> StoreResult<u64>;

    /// Quarantined records of one source (or all), newest first, at most `limit`.
    async fn quarantined(
        &self,
        source: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<StoredQuarantine>>;

    /// Records the start of a job run and returns its id.
    async fn start_run(
        &self,
        job: &JobId,
        trigger: JobTrigger,
        scheduled_for: DateTime<Utc>,
        started_at: DateTime<Utc>,
    ) -> StoreResult<JobRunId>;

    /// Records the end of a job run.
    async fn finish_run(
        &self,
        run: JobRunId,
        status: JobStatus,
        error: Option<&str>,
        counts: JobCounts,
        finished_at: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// The most recent run of a job.
    async fn last_run(&self, job: &JobId) -> StoreResult<Option<JobRun>>;

    /// Runs, newest first, of one job or of all, at most `limit`.
    async fn runs(&self, job: Option<&JobId>, limit: u32) -> StoreResult<Vec<JobRun>>;

    /// Marks runs still `running` (left by a daemon that died) as `interrupted`; returns how many.
    async fn mark_interrupted_runs(&self, at: DateTime<Utc>) -> StoreResult<u64>;

    /// Appends an entry to the audit log. The log cannot be updated or deleted through any path.
    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<AuditEntry>;

    /// Audit entries with id greater than `after_id`, oldest first, at most `limit`.
    async fn audit_log(&self, after_id: i64, limit: u32) -> StoreResult<Vec<AuditEntry>>;
}

/// Opens (creating if needed) the store at `url` and runs pending migrations.
pub async fn open(url: &StoreUrl, options: &OpenOptions) -> StoreResult<SqlStore> {
    SqlStore::open(url, options).await
}
