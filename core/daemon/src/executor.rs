//! Runs jobs: records each run in the store and dispatches it to its engine.
//!
//! After a source run that stored or changed records, the identity job resolves them into profiles. Identity
//! runs one at a time (a lock), so two sources finishing together never resolve the same records at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spindle_config::Config;
use spindle_identity::IdentityEngine;
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
    failures: AtomicU32,
    identity_lock: tokio::sync::Mutex<()>,
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

/// What a job's work returned: its counts and whether shutdown cut it short, or an error.
type Outcome = Result<(JobCounts, bool), String>;

impl DaemonExecutor {
    pub fn new(config: Arc<Config>, store: Arc<SqlStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            store,
            clock,
            failures: AtomicU32::new(0),
            identity_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// How many runs failed since the executor was made.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Runs a job and records it; for a source that changed records, resolves profiles afterwards. Returns
    /// the job's recorded status, counts and error.
    pub async fn execute(
        &self,
        job: &JobId,
        trigger: JobTrigger,
        scheduled_for: DateTime<Utc>,
        cancel: &CancellationToken,
        progress: &dyn Progress,
    ) -> (JobStatus, JobCounts, Option<String>) {
        let result = self
            .recorded(
                job,
                trigger,
                scheduled_for,
                self.work(job, cancel, progress),
            )
            .await;
        let changed = result.1.inserted + result.1.updated > 0;
        if job.kind == JobKind::Source && changed {
            let now = self.clock.now();
            self.recorded(&JobId::identity(), JobTrigger::Manual, now, self.resolve())
                .await;
        }
        result
    }

    /// Resolves every record changed since the last resolution (one at a time).
    pub async fn resolve(&self) -> Outcome {
        let _one_at_a_time = self.identity_lock.lock().await;
        let engine = IdentityEngine::new(
            self.store.as_ref(),
            &self.config.identity,
            &self.config.profiles,
        )
        .map_err(|err| err.to_string())?;
        let report = engine
            .resolve_pending()
            .await
            .map_err(|err| err.to_string())?;
        tracing::info!(
            records = report.records,
            profiles = report.profiles_written,
            created = report.created,
            merged = report.merged,
            split = report.split,
            "profiles resolved"
        );
        let counts = JobCounts {
            read: report.records,
            inserted: report.created,
            updated: report.profiles_written.saturating_sub(report.created),
            ..JobCounts::default()
        };
        Ok((counts, false))
    }

    async fn work(
        &self,
        job: &JobId,
        cancel: &CancellationToken,
        progress: &dyn Progress,
    ) -> Outcome {
        match job.kind {
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
            JobKind::Identity => self.resolve().await,
            JobKind::Sync => {
                Err("audience syncs are not run by this version of spindle".to_owned())
            }
        }
    }

    /// Records a run of `job` around `work`.
    async fn recorded(
        &self,
        job: &JobId,
        trigger: JobTrigger,
        scheduled_for: DateTime<Utc>,
        work: impl Future<Output = Outcome>,
    ) -> (JobStatus, JobCounts, Option<String>) {
        let started = self.clock.now();
        let run_id = match self
            .store
            .start_run(job, trigger, scheduled_for, started)
            .await
        {
            Ok(id) => id,
            Err(err) => {
                tracing::error!(job = %job, error = %err, "cannot record the start of the run; not running it");
                self.failures.fetch_add(1, Ordering::Relaxed);
                return (
                    JobStatus::Failed,
                    JobCounts::default(),
                    Some(err.to_string()),
                );
            }
        };
        tracing::info!(job = %job, run = run_id, "run started");
        let (status, counts, error) = match work.await {
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
            tracing::error!(job = %job, run = run_id, error = %err, "cannot record the end of the run");
        }
        let millis = (finished - started).num_milliseconds();
        match &error {
            None => tracing::info!(
                job = %job,
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
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(job = %job, run = run_id, error = %error, duration_ms = millis, "run failed");
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
