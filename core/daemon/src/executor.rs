//! Runs scheduled jobs: records each run in the store and dispatches it to its engine.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spindle_config::Config;
use spindle_model::{JobCounts, JobId, JobKind, JobStatus, JobTrigger};
use spindle_scheduler::{Clock, JobExecutor};
use spindle_sources::{Progress, build_source, run_source};
use spindle_store::{ProfileStore, SqlStore};
use tokio_util::sync::CancellationToken;

/// The daemon's job executor.
#[derive(Debug)]
pub struct DaemonExecutor {
    config: Arc<Config>,
    store: Arc<SqlStore>,
    clock: Arc<dyn Clock>,
    failures: std::sync::atomic::AtomicU32,
}

/// Logs a line per committed batch.
struct LogProgress<'a> {
    source: &'a str,
}

impl Progress for LogProgress<'_> {
    fn committed(&self, stream: &str, totals: &JobCounts) {
        tracing::debug!(
            source = self.source,
            stream,
            read = totals.read,
            inserted = totals.inserted,
            "progress"
        );
    }
}

impl DaemonExecutor {
    pub fn new(config: Arc<Config>, store: Arc<SqlStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            store,
            clock,
            failures: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// How many runs failed since the executor was made.
    pub fn failures(&self) -> u32 {
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs a job and records it; returns the recorded status, counts and error.
    pub async fn execute(
        &self,
        job: &JobId,
        trigger: JobTrigger,
        scheduled_for: DateTime<Utc>,
        cancel: &CancellationToken,
        progress: &dyn Progress,
    ) -> (JobStatus, JobCounts, Option<String>) {
        let started = self.clock.now();
        let run_id = match self
            .store
            .start_run(job, trigger, scheduled_for, started)
            .await
        {
            Ok(id) => id,
            Err(err) => {
                tracing::error!(error = %err, "cannot record the start of the run; not running it");
                self.failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return (
                    JobStatus::Failed,
                    JobCounts::default(),
                    Some(err.to_string()),
                );
            }
        };
        tracing::info!(run = run_id, "run started");
        let outcome = match job.kind {
            JobKind::Source => match self.config.sources.get(&job.name) {
                Some(source_config) => {
                    let mut source = build_source(source_config);
                    run_source(
                        &job.name,
                        source.as_mut(),
                        self.store.as_ref(),
                        cancel,
                        progress,
                    )
                    .await
                    .map_err(|err| err.to_string())
                }
                None => Err(format!("source `{}` is not in the configuration", job.name)),
            },
            JobKind::Sync => {
                Err("audience syncs are not run by this version of spindle".to_owned())
            }
        };
        let (status, counts, error) = match outcome {
            Ok((counts, false)) => (JobStatus::Succeeded, counts, None),
            Ok((counts, true)) => (JobStatus::Cancelled, counts, None),
            Err(error) => (JobStatus::Failed, JobCounts::default(), Some(error)),
        };
        let finished = self.clock.now();
        if let Err(err) = self
            .store
            .finish_run(run_id, status, error.as_deref(), counts, finished)
            .await
        {
            tracing::error!(run = run_id, error = %err, "cannot record the end of the run");
        }
        let millis = (finished - started).num_milliseconds();
        match &error {
            None => tracing::info!(
                run = run_id,
                status = status.as_str(),
                read = counts.read,
                inserted = counts.inserted,
                updated = counts.updated,
                unchanged = counts.unchanged,
                quarantined = counts.quarantined,
                duration_ms = millis,
                "run finished"
            ),
            Some(error) => {
                self.failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(run = run_id, error = %error, duration_ms = millis, "run failed");
            }
        }
        (status, counts, error)
    }
}

#[async_trait]
impl JobExecutor for DaemonExecutor {
    async fn last_scheduled_for(&self, job: &JobId) -> Option<DateTime<Utc>> {
        match self.store.last_run(job).await {
            Ok(run) => run.map(|r| r.scheduled_for),
            Err(err) => {
                tracing::warn!(job = %job, error = %err, "cannot read the last run; not catching up");
                None
            }
        }
    }

    async fn run(
        &self,
        job: &JobId,
        trigger: JobTrigger,
        scheduled_for: DateTime<Utc>,
        cancel: CancellationToken,
    ) {
        // The scheduler has already entered a span naming the job, trigger and scheduled time.
        let progress = LogProgress { source: &job.name };
        self.execute(job, trigger, scheduled_for, &cancel, &progress)
            .await;
    }
}
