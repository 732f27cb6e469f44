//! The pull loop shared by every connector.

use std::time::Duration;

use async_trait::async_trait;
use spindle_model::{Cursor, JobCounts};
use spindle_store::{ProfileStore, SourceBatch};
use tokio_util::sync::CancellationToken;

use crate::SourceError;

/// When the framework should call [`Source::pull`] again for the same stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The stream is read to its end for this run.
    Done,
    /// More is available now.
    More,
    /// More is available after a pause (a rate limit asked for it).
    After(Duration),
}

/// One pull's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Pull {
    /// Records, quarantined records and the cursor after them; committed in one transaction.
    pub batch: SourceBatch,
    /// What to do next.
    pub next: Next,
}

/// A source connector.
#[async_trait]
pub trait Source: Send + std::fmt::Debug {
    /// The connector kind (`csv`, `hubspot`, ...).
    fn kind(&self) -> &'static str;

    /// The streams this source reads, in the order they are read.
    fn streams(&self) -> Vec<String>;

    /// Reads the next batch of `stream` after `cursor` (`None`: from the beginning). The returned batch's
    /// cursor for `stream`, if any, is where the next pull starts.
    async fn pull(&mut self, stream: &str, cursor: Option<&Cursor>) -> Result<Pull, SourceError>;

    /// A read-only probe that the source is reachable and readable (`spindle validate --check-connections`).
    async fn check(&self) -> Result<(), SourceError>;
}

/// Receives progress while a source runs (a progress bar, log lines).
pub trait Progress: Send + Sync {
    /// Called after each committed batch with the run's totals so far.
    fn committed(&self, stream: &str, totals: &JobCounts);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn committed(&self, _stream: &str, _totals: &JobCounts) {}
}

/// Adds one committed batch to the run's totals.
fn add(totals: &mut JobCounts, read: u64, report: spindle_model::ApplyReport) {
    totals.read += read;
    totals.inserted += report.inserted;
    totals.updated += report.updated;
    totals.unchanged += report.unchanged;
    totals.quarantined += report.quarantined;
}

/// Runs a source over all its streams: pull, commit records with their cursor, repeat until every stream is
/// done. Returns the totals and whether the run was cut short by `cancel` (after its last commit).
pub async fn run_source(
    source_id: &str,
    source: &mut dyn Source,
    store: &dyn ProfileStore,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<(JobCounts, bool), SourceError> {
    let mut totals = JobCounts::default();
    for stream in source.streams() {
        let mut cursor = store.cursor(source_id, &stream).await?;
        let mut prefetched: Option<Pull> = None;
        loop {
            let pull = match prefetched.take() {
                Some(pull) => pull,
                // A pull commits nothing, so abandoning it on shutdown loses nothing.
                None => tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Ok((totals, true)),
                    pull = source.pull(&stream, cursor.as_ref()) => pull?,
                },
            };
            let read = pull.batch.records.len() as u64 + pull.batch.quarantined.len() as u64;
            if let Some(next_cursor) = pull.batch.cursors.iter().rev().find(|c| c.stream == stream)
            {
                cursor = Some(next_cursor.clone());
            }
            let has_work = read > 0 || !pull.batch.cursors.is_empty();
            if has_work {
                // The commit is never raced against shutdown: it finishes or fails as a whole. While it runs,
                // the next page is already being fetched from the position this batch ends at.
                let commit = store.apply_source_batch(source_id, pull.batch);
                let (report, next_pull) = if pull.next == Next::More && !cancel.is_cancelled() {
                    let (report, next_pull) =
                        tokio::join!(commit, source.pull(&stream, cursor.as_ref()));
                    (report?, Some(next_pull))
                } else {
                    (commit.await?, None)
                };
                add(&mut totals, read, report);
                metrics::counter!("spindle_source_records_pulled_total", "source" => source_id.to_owned())
                    .increment(read);
                progress.committed(&stream, &totals);
                tracing::debug!(
                    source = source_id,
                    stream = %stream,
                    read,
                    inserted = report.inserted,
                    updated = report.updated,
                    quarantined = report.quarantined,
                    "batch committed"
                );
                if cancel.is_cancelled() {
                    return Ok((totals, true));
                }
                if let Some(next_pull) = next_pull {
                    prefetched = Some(next_pull?);
                }
            }
            match pull.next {
                Next::Done => break,
                Next::More => {}
                Next::After(pause) => {
                    tokio::select! {
                        () = cancel.cancelled() => return Ok((totals, true)),
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
    Ok((totals, false))
}
