//! The append-only audit log of administrative actions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An entry to append to the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// Who acted: `cli:<user>`, `api:<token name>`, `daemon`.
    pub actor: String,
    /// What they did, as a dotted verb: `store.restore`, `source.full_resync`.
    pub action: String,
    /// What it was done to: a source id, a profile id, a path.
    pub target: String,
    /// Further structured detail; never secrets.
    pub details: serde_json::Value,
}

/// An entry as stored, with its position and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log; strictly increasing.
    pub id: i64,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// The entry.
    pub entry: NewAuditEntry,
}
