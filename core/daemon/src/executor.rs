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
    /// The profiles in memory that segment evaluations and previews run on.
    profiles: Arc<spindle_sync::live::SharedProfiles>,
    plugin_host: tokio::sync::OnceCell<Result<spindle_plugin_host::PluginHost, String>>,
    plugins: tokio::sync::Mutex<
        std::collections::HashMap<String, (spindle_plugin_host::LoadedPlugin, usize)>,
    >,
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
            profiles: Arc::new(spindle_sync::live::SharedProfiles::new()),
            plugin_host: tokio::sync::OnceCell::new(),
            plugins: tokio::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The profile table segment evaluations run on (loaded on first use, then kept current).
    pub fn profiles(&self) -> Arc<spindle_sync::live::SharedProfiles> {
        self.profiles.clone()
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
        metrics::counter!("spindle_profiles_merged_total").increment(report.merged);
        if !report.touched.is_empty() {
            self.evaluate_changed_segments().await?;
        }
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

    /// Every segment: those of the configuration and those created through the admin API.
    async fn segments(&self) -> Result<spindle_sync::membership::Segments, String> {
        spindle_server::admin::compile_all(&self.config, self.store.as_ref())
            .await
            .map_err(|e| e.to_string())
    }

    /// Re-evaluates every segment over every profile and records who entered and left.
    pub async fn evaluate_segments(&self) -> Result<(), String> {
        let segments = self.segments().await?;
        if segments.ids().is_empty() {
            return Ok(());
        }
        let report = spindle_sync::membership::evaluate_all(
            self.store.as_ref(),
            &segments,
            &self.profiles,
            self.clock.now(),
        )
        .await
        .map_err(|e| e.to_string())?;
        Self::log_membership(&report);
        Ok(())
    }

    /// Re-evaluates every segment for the profiles written or removed since memberships were last
    /// evaluated.
    pub async fn evaluate_changed_segments(&self) -> Result<(), String> {
        let segments = self.segments().await?;
        if segments.ids().is_empty() {
            return Ok(());
        }
        let report = spindle_sync::membership::evaluate_changes(
            self.store.as_ref(),
            &segments,
            &self.profiles,
            self.clock.now(),
        )
        .await
        .map_err(|e| e.to_string())?;
        Self::log_membership(&report);
        Ok(())
    }

    fn log_membership(report: &spindle_sync::membership::MembershipReport) {
        for (segment, (entered, exited)) in &report.changes {
            if entered + exited > 0 {
                tracing::info!(segment = %segment, entered, exited, "segment membership changed");
            }
        }
    }

    /// The plugin of a destination, loaded once (compiled code cached beside the configuration), with the
    /// batch size to use.
    pub async fn plugin_for(
        &self,
        destination: &spindle_config::DestinationConfig,
    ) -> Result<
        (
            spindle_plugin_host::PluginHost,
            spindle_plugin_host::LoadedPlugin,
            usize,
        ),
        String,
    > {
        let config_dir = self
            .config
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_owned();
        let host = self
            .plugin_host
            .get_or_init(|| async {
                spindle_plugin_host::PluginHost::new(Some(crate::commands::plugin::cache_dir(
                    &config_dir,
                )))
                .map_err(|e| e.to_string())
            })
            .await
            .clone()?;
        let mut plugins = self.plugins.lock().await;
        if let Some((plugin, size)) = plugins.get(&destination.id) {
            return Ok((host, plugin.clone(), *size));
        }
        let path = spindle_plugin_host::locate(&destination.plugin, &config_dir)
            .map_err(|e| e.to_string())?;
        let plugin = host.load(&path).map_err(|e| e.to_string())?;
        let limits = crate::commands::plugin::call_limits(destination);
        host.warm_up(&plugin, &limits)
            .await
            .map_err(|e| e.to_string())?;
        let info = host
            .describe(&plugin, &limits)
            .await
            .map_err(|e| e.to_string())?;
        let size = destination
            .batch_size
            .unwrap_or(info.max_batch_size)
            .min(info.max_batch_size)
            .max(1) as usize;
        plugins.insert(destination.id.clone(), (plugin.clone(), size));
        Ok((host, plugin, size))
    }

    /// Runs one audience sync: brings memberships up to date, then diffs and sends.
    async fn sync(&self, name: &str) -> Outcome {
        let sync = self
            .config
            .syncs
            .get(name)
            .ok_or_else(|| format!("sync `{name}` is not in the configuration"))?;
        let destination = self
            .config
            .destinations
            .get(&sync.destination)
            .ok_or_else(|| {
                format!(
                    "destination `{}` is not in the configuration",
                    sync.destination
                )
            })?;
        {
            let _one_at_a_time = self.identity_lock.lock().await;
            self.evaluate_segments().await?;
        }
        let (host, plugin, batch_size) = self.plugin_for(destination).await?;
        let report = spindle_sync::engine::run_sync(
            self.store.as_ref(),
            &host,
            &plugin,
            sync,
            destination,
            batch_size,
        )
        .await
        .map_err(|e| e.to_string())?;
        if let (Some(why), pending) = (&report.unavailable, report.pending)
            && pending > 0
        {
            return Err(format!(
                "destination `{}` is unavailable ({why}); {pending} change(s) wait in the outbox for the next run",
                destination.id
            ));
        }
        for (outcome, n) in [
            ("delivered", report.delivered),
            ("rejected", report.rejected),
            ("retried", report.retried),
        ] {
            metrics::counter!(
                "spindle_sync_outcomes_total",
                "destination" => destination.id.clone(),
                "outcome" => outcome,
            )
            .increment(n);
        }
        let counts = JobCounts {
            read: report.added + report.updated + report.removed,
            inserted: report.added,
            updated: report.updated,
            removed: report.removed,
            delivered: report.delivered,
            rejected: report.rejected,
            retried: report.retried,
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
            JobKind::Sync => self.sync(&job.name).await,
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
