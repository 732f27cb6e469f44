//! Spindle's domain types, shared by every crate and free of I/O.
//!
//! Contract: these types describe data as it moves through the pipeline (records pulled from sources, the
//! cursors that mark progress, job runs and audit entries). They carry no behaviour beyond construction and
//! (de)serialisation, so any crate may depend on them without pulling in a runtime or a database.
#![deny(missing_docs)]

mod audit;
mod job;
mod record;

pub use audit::{AuditEntry, NewAuditEntry};
pub use job::{JobCounts, JobId, JobKind, JobRun, JobRunId, JobStatus, JobTrigger};
pub use record::{
    ApplyReport, Cursor, Event, Identifier, QuarantinedRecord, RawRecord, RecordKey, StoredRecord,
};
