//! The HubSpot cursor: which phase a stream is in and where inside it.

use serde::{Deserialize, Serialize};
use spindle_model::Cursor;

/// A closed search window and the position inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SearchWindow {
    /// Lower bound of the modified date, inclusive, epoch ms.
    pub since_ms: i64,
    /// Upper bound, inclusive, epoch ms; fixed for the whole window.
    pub until_ms: i64,
    /// Restart point after the 10,000-result cap: only ids greater than this.
    pub after_id: Option<u64>,
    /// Search offset (HubSpot's numeric `after`).
    pub offset: u32,
}

/// Where a stream stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub(super) enum Phase {
    /// The first full read with the list endpoint; `started_ms` is when it began.
    List {
        after: Option<String>,
        started_ms: Option<i64>,
    },
    /// Reading archived objects; afterwards searches start at `next_since_ms`.
    Archived {
        after: Option<String>,
        next_since_ms: i64,
    },
    /// Incremental reads from `since_ms`; `window` is set while a window is being read.
    Search {
        since_ms: i64,
        window: Option<SearchWindow>,
    },
}

impl Phase {
    /// The phase a stored cursor stands for; no (or an unreadable) cursor starts a full read.
    pub fn from_cursor(cursor: Option<&Cursor>) -> Self {
        cursor
            .and_then(|c| serde_json::from_value(c.position.clone()).ok())
            .unwrap_or(Phase::List {
                after: None,
                started_ms: None,
            })
    }

    /// The value stored in the cursor.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}
