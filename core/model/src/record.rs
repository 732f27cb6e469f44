//! Records pulled from sources, the cursors that mark how far a stream has been read, and quarantine entries.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One identifier found on a record, e.g. `email = "Ada@Example.com "`.
///
/// The value is kept exactly as the source gave it; normalisation happens in identity resolution.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    /// Identifier type: `email`, `phone`, `user_id`, `anonymous_id`, `<source>_id`, ...
    pub kind: String,
    /// The raw value as read from the source.
    pub value: String,
}

impl Identifier {
    /// Builds an identifier from its type and raw value.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

/// Something a customer did, placed on their timeline (an order, a page view, a charge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event name, e.g. `order_completed`.
    pub name: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Event properties (amount, currency, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// A record as produced by a source connector, before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawRecord {
    /// The stream inside the source (`contacts`, `orders`, `rows`).
    pub stream: String,
    /// The record's id in the source system; unique within `(source, stream)`.
    pub external_id: String,
    /// Monotonic version of the record in the source (modified-at in milliseconds, a generation counter, ...).
    /// A stored record is only replaced by a strictly greater version.
    pub version: i64,
    /// When the source says the record last changed, if it says so.
    pub updated_at: Option<DateTime<Utc>>,
    /// True when the source reports the record as deleted or archived.
    #[serde(default)]
    pub deleted: bool,
    /// Identifiers found on the record.
    pub identifiers: Vec<Identifier>,
    /// Descriptive attributes (names, address, consent fields, ...).
    pub traits: BTreeMap<String, serde_json::Value>,
    /// Events the record carries for the customer's timeline.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// The key that identifies a stored record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordKey {
    /// Source id from `connectors.toml`.
    pub source: String,
    /// Stream inside the source.
    pub stream: String,
    /// Id in the source system.
    pub external_id: String,
}

/// A record as held by the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Store-wide, strictly increasing change sequence: every insert or update takes a new value, so
    /// downstream consumers (identity resolution) can follow changes with a single high-water mark.
    pub seq: i64,
    /// Source id from `connectors.toml`.
    pub source: String,
    /// When Spindle first stored this record.
    pub first_seen_at: DateTime<Utc>,
    /// When Spindle last changed this record.
    pub observed_at: DateTime<Utc>,
    /// The record itself.
    pub record: RawRecord,
}

/// How far a stream has been read. Opaque to the store: each connector decides what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Stream the cursor belongs to.
    pub stream: String,
    /// Connector-specific position, e.g. `{"offset": 1024, "sha256": "..."}`.
    pub position: serde_json::Value,
}

/// A record that could not be read, kept with the reason so nothing is lost silently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantinedRecord {
    /// Stream the record came from.
    pub stream: String,
    /// Where in the source it was found: a line number, a page and index, an id.
    pub location: String,
    /// Why it was rejected.
    pub reason: String,
    /// The raw payload as received.
    pub payload: String,
}

/// What happened when a batch was applied to the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Records seen for the first time.
    pub inserted: u64,
    /// Records replaced by a newer version with different content.
    pub updated: u64,
    /// Records skipped because the store already had this version (or a newer one) or identical content.
    pub unchanged: u64,
    /// Records quarantined in this batch.
    pub quarantined: u64,
}

impl ApplyReport {
    /// Adds another report's counts to this one.
    pub fn absorb(&mut self, other: ApplyReport) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.quarantined += other.quarantined;
    }
}
