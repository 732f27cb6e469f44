//! Audiences: segment memberships and audience syncs.
//!
//! Contract:
//! - [`live`] keeps the profiles in memory as a columnar table, current with the store's change log.
//! - [`membership`] evaluates every configured segment (in dependency order, so `in_segment()` sees
//!   current results) over that table, and records who entered and who left, with the time, in one
//!   transaction per segment.
//! - [`engine::run_sync`] diffs a segment's members and their mapped payloads against what the destination
//!   was last known to hold, writes the changes to the durable outbox, sends them through the destination's
//!   plugin in batches, and settles each record's outcome in the same transaction that removes it from the
//!   outbox. A crash at any point leaves every change either pending (sent again on the next run; plugins
//!   must be idempotent) or settled. `retry` outcomes come back with backoff and the vendor's
//!   `Retry-After`, within the run when the wait is short and in a later run otherwise; `rejected` ones go to
//!   the dead letters, and `spindle syncs replay` sends them again.
#![deny(missing_docs)]

pub mod engine;
pub mod live;
pub mod membership;

/// Why a membership evaluation or a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The store failed; nothing of the step was half-written.
    #[error(transparent)]
    Store(#[from] spindle_store::StoreError),
    /// A segment expression does not parse, or names a missing segment, or segments refer to each other
    /// in a cycle.
    #[error("segment `{segment}`: {message}")]
    Segment {
        /// The segment.
        segment: String,
        /// What is wrong.
        message: String,
    },
    /// The destination's plugin could not be loaded or failed.
    #[error(transparent)]
    Plugin(#[from] spindle_plugin_host::PluginError),
    /// The destination refused the whole batch (credentials, configuration).
    #[error("destination `{destination}` refused the batch: {reason}")]
    Destination {
        /// The destination.
        destination: String,
        /// Why.
        reason: String,
    },
    /// The configuration does not name what the sync needs.
    #[error("{0}")]
    Config(String),
}
