//! `spindle run [--once]`: the daemon.
//!
//! Start-up: load and validate the configuration, lock and open the store (migrations run), mark runs left
//! `running` by a daemon that died as `interrupted`, then schedule every source. SIGINT or SIGTERM cancels:
//! running jobs stop after their current transaction and the daemon exits once they have; a second signal
//! exits at once (nothing half-written is possible, every commit is atomic).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use spindle_model::JobId;
use spindle_scheduler::{Clock, ScheduledJob, Scheduler, SystemClock};
use spindle_store::{IdentityStore, ProfileStore, SqlStore, SyncStore};
use tokio_util::sync::CancellationToken;

use crate::commands::{lock_store, open_store, print};
use crate::executor::DaemonExecutor;
use crate::{Failure, load_config};

/// Jobs to schedule: source jobs, then audience sync jobs.
fn jobs(config: &spindle_config::Config) -> (Vec<ScheduledJob>, Vec<ScheduledJob>) {
    let sources = config
        .sources
        .values()
        .map(|source| ScheduledJob {
            id: JobId::source(&source.id),
            schedule: source.schedule.clone(),
        })
        .collect();
    let syncs = config
        .syncs
        .values()
        .map(|sync| ScheduledJob {
            id: JobId::sync(&sync.id),
            schedule: sync.schedule.clone(),
        })
        .collect();
    (sources, syncs)
}

/// What the store holds after a run: records per source, profiles, segment sizes and each sync's last run.
pub async fn summary(config: &spindle_config::Config, store: &SqlStore) -> anyhow::Result<String> {
    let mut out = String::from("\nSummary\n");
    let records = store
        .count_records(None)
        .await
        .context("counting records")?;
    let mut per_source = Vec::new();
    for id in config.sources.keys() {
        let count = store
            .count_records(Some(id))
            .await
            .context("counting records")?;
        per_source.push(format!("{id} {count}"));
    }
    out.push_str(&format!(
        "  records   {records} ({})\n",
        per_source.join(", ")
    ));
    let profiles = store.count_profiles().await.context("counting profiles")?;
    out.push_str(&format!("  profiles  {profiles}\n"));
    for id in config.segments.keys() {
        let members = store
            .segment_members(id)
            .await
            .context("reading segment members")?;
        out.push_str(&format!("  segment   {id}: {} member(s)\n", members.len()));
    }
    for (id, sync) in &config.syncs {
        let line = match store
            .last_run(&JobId::sync(id))
            .await
            .context("reading runs")?
        {
            None => "never ran".to_owned(),
            Some(run) => format!(
                "{}: added {}, updated {}, removed {}, delivered {}, rejected {}, retried {}{}",
                run.status.as_str(),
                run.counts.inserted,
                run.counts.updated,
                run.counts.removed,
                run.counts.delivered,
                run.counts.rejected,
                run.counts.retried,
                run.error.map(|e| format!(" ({e})")).unwrap_or_default()
            ),
        };
        out.push_str(&format!(
            "  sync      {id} ({} -> {}): {line}\n",
            sync.segment, sync.destination
        ));
    }
    Ok(out)
}

/// Cancels `token` on SIGINT or SIGTERM; exits the process on a second signal.
fn watch_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            wait_for_signal().await;
            count += 1;
            if count == 1 {
                tracing::info!(
                    "shutting down: running jobs finish their current transaction (signal again to exit now)"
                );
                token.cancel();
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch SIGTERM; watching SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs the daemon until a signal, or every job once with `once`.
pub async fn run(path: &Path, once: bool) -> Result<(), Failure> {
    let config = Arc::new(load_config(path)?);
    let _lock = lock_store(&config)?;
    let store = open_store(&config).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let interrupted = store
        .mark_interrupted_runs(clock.now())
        .await
        .context("recovering interrupted runs")?;
    if interrupted > 0 {
        tracing::warn!(
            runs = interrupted,
            "runs left unfinished by a previous daemon were marked interrupted; they resume from their last commit"
        );
    }
    let (source_jobs, sync_jobs) = jobs(&config);
    tracing::info!(
        store = %config.store.url.redacted(),
        sources = config.sources.len(),
        syncs = config.syncs.len(),
        mode = if once { "once" } else { "daemon" },
        "spindle starting"
    );
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    let executor = Arc::new(DaemonExecutor::new(
        config.clone(),
        store.clone(),
        clock.clone(),
    ));
    if once {
        // Sources first, so that the syncs send what they brought.
        Scheduler::new(source_jobs, clock.clone())
            .run_once(executor.clone(), 2, cancel.clone())
            .await;
        if !cancel.is_cancelled() {
            Scheduler::new(sync_jobs, clock)
                .run_once(executor.clone(), 2, cancel.clone())
                .await;
        }
    } else {
        let mut jobs = source_jobs;
        jobs.extend(sync_jobs);
        let scheduler = Scheduler::new(jobs, clock);
        let server = crate::serve::start(
            &config,
            store.clone(),
            executor.clone(),
            scheduler.handle(),
            cancel.clone(),
        )
        .await?;
        scheduler.run(executor.clone(), cancel.clone()).await;
        server.finished().await?;
    }
    if once {
        print(&summary(&config, &store).await?)?;
    }
    store.close().await;
    let failures = executor.failures();
    tracing::info!(failed_runs = failures, "spindle stopped");
    if once && failures > 0 {
        return Err(Failure::Other(anyhow::anyhow!(
            "{failures} job run(s) failed; see the log above"
        )));
    }
    Ok(())
}
