//! `spindle syncs list|run|history|replay` and `spindle segments preview`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use spindle_model::{JobId, JobStatus, JobTrigger};
use spindle_scheduler::SystemClock;
use spindle_sources::NoProgress;
use spindle_store::{ProfileStore, SyncStore};
use tokio_util::sync::CancellationToken;

use crate::commands::{lock_store, open_store, print};
use crate::executor::DaemonExecutor;
use crate::{Failure, load_config};

fn known_sync<'a>(
    config: &'a spindle_config::Config,
    id: &str,
) -> Result<&'a spindle_config::SyncConfig, Failure> {
    config.syncs.get(id).ok_or_else(|| {
        let known: Vec<&str> = config.syncs.keys().map(String::as_str).collect();
        Failure::Other(anyhow::anyhow!(
            "there is no sync `{id}`; syncs: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    })
}

/// Lists syncs with their last run, pending changes and dead letters.
pub async fn list(path: &Path) -> Result<(), Failure> {
    let config = load_config(path)?;
    let store = open_store(&config).await?;
    let mut out = String::new();
    for (id, sync) in &config.syncs {
        let schedule = sync.schedule.as_ref().map_or_else(
            || "on demand".to_owned(),
            |s| format!("{} ({})", s.expression(), s.timezone()),
        );
        let last = match store
            .last_run(&JobId::sync(id))
            .await
            .context("reading runs")?
        {
            None => "never ran".to_owned(),
            Some(run) => format!(
                "{} at {} (added {}, updated {}, removed {}, delivered {}, rejected {}, retried {}){}",
                run.status.as_str(),
                run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                run.counts.inserted,
                run.counts.updated,
                run.counts.removed,
                run.counts.delivered,
                run.counts.rejected,
                run.counts.retried,
                run.error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
        };
        let pending = store.pending(id).await.context("reading the outbox")?;
        let dead = store
            .dead_letters(id)
            .await
            .context("reading dead letters")?
            .len();
        out.push_str(&format!(
            "{id}  segment={}  destination={}  mode={:?}  schedule={schedule}\n  last run: {last}\n  pending: {pending}  dead letters: {dead}\n",
            sync.segment, sync.destination, sync.mode
        ));
    }
    if config.syncs.is_empty() {
        out.push_str("no syncs are configured\n");
    }
    store.close().await;
    print(&out)
}

/// Runs one sync now, or shows what it would send.
pub async fn run(path: &Path, id: &str, dry_run: bool) -> Result<(), Failure> {
    let config = Arc::new(load_config(path)?);
    let sync = known_sync(&config, id)?.clone();
    let _lock = lock_store(&config)?;
    let store = open_store(&config).await?;
    let executor = DaemonExecutor::new(config.clone(), store.clone(), Arc::new(SystemClock));
    if dry_run {
        executor
            .evaluate_segments()
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let (_, plan) = spindle_sync::engine::plan(store.as_ref(), &sync)
            .await
            .context("planning the sync")?;
        let mut out = format!("{:<8} {:>10}  payload\n", "action", "profile");
        for change in &plan {
            out.push_str(&format!(
                "{:<8} {:>10}  {}\n",
                change.action, change.profile_id, change.payload
            ));
        }
        out.push_str(&format!(
            "{} change(s); nothing was sent (dry run)\n",
            plan.len()
        ));
        store.close().await;
        return print(&out);
    }
    let (status, counts, error) = executor
        .execute(
            &JobId::sync(id),
            JobTrigger::Manual,
            Utc::now(),
            &CancellationToken::new(),
            &NoProgress,
        )
        .await;
    store.close().await;
    print(&format!(
        "{id}: {} — added {}, updated {}, removed {}, delivered {}, rejected {}, retried {}\n",
        status.as_str(),
        counts.inserted,
        counts.updated,
        counts.removed,
        counts.delivered,
        counts.rejected,
        counts.retried
    ))?;
    match (status, error) {
        (JobStatus::Failed, Some(error)) => Err(Failure::Other(anyhow::anyhow!("{error}"))),
        _ => Ok(()),
    }
}

/// Prints a sync's recent runs.
pub async fn history(path: &Path, id: &str) -> Result<(), Failure> {
    let config = load_config(path)?;
    known_sync(&config, id)?;
    let store = open_store(&config).await?;
    let runs = store
        .runs(Some(&JobId::sync(id)), 20)
        .await
        .context("reading runs")?;
    store.close().await;
    let mut out = format!(
        "{:<22} {:<10} {:>6} {:>7} {:>7} {:>9} {:>8} {:>7}  error\n",
        "started", "status", "added", "updated", "removed", "delivered", "rejected", "retried"
    );
    for run in runs {
        out.push_str(&format!(
            "{:<22} {:<10} {:>6} {:>7} {:>7} {:>9} {:>8} {:>7}  {}\n",
            run.started_at.format("%Y-%m-%d %H:%M:%S"),
            run.status.as_str(),
            run.counts.inserted,
            run.counts.updated,
            run.counts.removed,
            run.counts.delivered,
            run.counts.rejected,
            run.counts.retried,
            run.error.unwrap_or_default()
        ));
    }
    print(&out)
}

/// Sends a sync's dead letters again.
pub async fn replay(path: &Path, id: &str) -> Result<(), Failure> {
    let config = load_config(path)?;
    known_sync(&config, id)?;
    {
        let store = open_store(&config).await?;
        let replayed = store
            .replay_dead_letters(id, Utc::now())
            .await
            .context("replaying dead letters")?;
        store.close().await;
        print(&format!("{replayed} dead letter(s) back in the outbox\n"))?;
    }
    run(path, id, false).await
}

/// Counts and samples the members of a segment (by id) or of an expression.
pub async fn preview(path: &Path, what: &str, sample: usize) -> Result<(), Failure> {
    let config = load_config(path)?;
    let text = config
        .segments
        .get(what)
        .map_or(what, |s| s.expression.as_str())
        .to_owned();
    let expr = spindle_segments::parse(&text)
        .map_err(|err| anyhow::anyhow!("{}", spindle_segments::render_error(&text, &err)))?;
    let store = open_store(&config).await?;
    // Configured and API-created segments, so `in_segment()` sees both.
    let segments = spindle_server::admin::compile_all(&config, store.as_ref())
        .await
        .context("compiling the segments")?;
    let started = std::time::Instant::now();
    let now = Utc::now();
    // The admin API's preview: one page loop for both.
    let (count, sampled) = spindle_server::admin::segments::preview(
        store.as_ref(),
        &segments,
        &expr,
        now,
        sample,
        &spindle_sync::live::SharedProfiles::new(),
    )
    .await
    .context("reading profiles")?;
    let members: Vec<String> = sampled
        .iter()
        .map(|(id, _, doc)| {
            let name: Vec<&str> = ["first_name", "last_name"]
                .iter()
                .filter_map(|t| doc.traits.get(*t).and_then(|v| v.value.as_str()))
                .collect();
            let email = doc
                .identifiers
                .iter()
                .find(|i| i.kind == "email")
                .map_or("", |i| i.value.as_str());
            format!("{id:>8}  {:<28} {email}", name.join(" "))
        })
        .collect();
    store.close().await;
    let mut out = format!(
        "{count} profile(s) match `{text}` ({} ms)\n",
        started.elapsed().as_millis()
    );
    for line in members {
        out.push_str(&line);
        out.push('\n');
    }
    print(&out)
}
