//! Scheduled jobs (source pulls, audience syncs) and the history of their runs.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Pull a source connector.
    Source,
    /// Run an audience sync.
    Sync,
    /// Resolve changed records into profiles.
    Identity,
}

impl JobKind {
    /// The lowercase name used in job ids and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Source => "source",
            JobKind::Sync => "sync",
            JobKind::Identity => "identity",
        }
    }
}

/// A job's identity: its kind and the id of the source or sync in `connectors.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId {
    /// Source or sync.
    pub kind: JobKind,
    /// The section id, e.g. `crm` for `[sources.crm]`.
    pub name: String,
}

impl JobId {
    /// A source pull job.
    pub fn source(name: impl Into<String>) -> Self {
        Self {
            kind: JobKind::Source,
            name: name.into(),
        }
    }

    /// The identity resolution job (one per installation).
    pub fn identity() -> Self {
        Self {
            kind: JobKind::Identity,
            name: "profiles".into(),
        }
    }

    /// An audience sync job.
    pub fn sync(name: impl Into<String>) -> Self {
        Self {
            kind: JobKind::Sync,
            name: name.into(),
        }
    }

    /// Parses `source:<name>` or `sync:<name>`.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, name) = text.split_once(':')?;
        let kind = match kind {
            "source" => JobKind::Source,
            "sync" => JobKind::Sync,
            "identity" => JobKind::Identity,
            _ => return None,
        };
        (!name.is_empty()).then(|| Self {
            kind,
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobTrigger {
    /// Its cron schedule fired.
    Schedule,
    /// A scheduled time passed while the daemon was down; run once at start.
    CatchUp,
    /// Somebody asked for it (CLI, API, `run --once`).
    Manual,
}

impl JobTrigger {
    /// The lowercase name stored in job runs.
    pub fn as_str(self) -> &'static str {
        match self {
            JobTrigger::Schedule => "schedule",
            JobTrigger::CatchUp => "catchup",
            JobTrigger::Manual => "manual",
        }
    }

    /// Parses the stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "schedule" => Some(JobTrigger::Schedule),
            "catchup" => Some(JobTrigger::CatchUp),
            "manual" => Some(JobTrigger::Manual),
            _ => None,
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Still going.
    Running,
    /// Finished without error.
    Succeeded,
    /// Finished with an error; see the run's `error`.
    Failed,
    /// Stopped by shutdown after its last committed batch; the next run resumes from there.
    Cancelled,
    /// Was running when the daemon died; found at the next start.
    Interrupted,
}

impl JobStatus {
    /// The lowercase name stored in job runs.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Interrupted => "interrupted",
        }
    }

    /// Parses the stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "running" => Some(JobStatus::Running),
            "succeeded" => Some(JobStatus::Succeeded),
            "failed" => Some(JobStatus::Failed),
            "cancelled" => Some(JobStatus::Cancelled),
            "interrupted" => Some(JobStatus::Interrupted),
            _ => None,
        }
    }
}

/// Counts a run reports. Fields that do not apply to a job stay zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounts {
    /// Records read from the source.
    pub read: u64,
    /// Records stored for the first time.
    pub inserted: u64,
    /// Records replaced by a newer version.
    pub updated: u64,
    /// Records already held at this version.
    pub unchanged: u64,
    /// Records quarantined.
    pub quarantined: u64,
    /// Audience members removed from a destination.
    #[serde(default)]
    pub removed: u64,
    /// Changes a destination accepted.
    #[serde(default)]
    pub delivered: u64,
    /// Changes a destination refused (dead letters).
    #[serde(default)]
    pub rejected: u64,
    /// Retries scheduled.
    #[serde(default)]
    pub retried: u64,
}

/// Store-assigned id of a job run.
pub type JobRunId = i64;

/// One run of a job, as recorded in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRun {
    /// Run id.
    pub id: JobRunId,
    /// The job.
    pub job: JobId,
    /// Why it ran.
    pub trigger: JobTrigger,
    /// The schedule time it stands for (for scheduled and catch-up runs), else the start time.
    pub scheduled_for: DateTime<Utc>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended, if it has.
    pub finished_at: Option<DateTime<Utc>>,
    /// Where it stands.
    pub status: JobStatus,
    /// The error that ended it, if any.
    pub error: Option<String>,
    /// What it did.
    pub counts: JobCounts,
}
