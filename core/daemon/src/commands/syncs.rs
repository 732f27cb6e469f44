//! `spindle syncs list|run|history|replay` and `spindle segments preview`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use spindle_identity::profile::ProfileDocument;
use spindle_model::{JobId, JobStatus, JobTrigger};
use spindle_scheduler::SystemClock;
use spindle_sources::NoProgress;
use spindle_store::{IdentityStore, ProfileStore, SyncStore};
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
    let segments = spindle_sync::membership::Segments::compile(&config)
        .context("compiling the configured segments")?;
    let store = open_store(&config).await?;
    let started = std::time::Instant::now();
    let now = Utc::now();
    let (mut count, mut members) = (0u64, Vec::new());
    let mut after = 0;
    loop {
        let page = store
            .profiles_page(after, 2_000)
            .await
            .context("reading profiles")?;
        let Some(last) = page.last().map(|p| p.id) else {
            break;
        };
        after = last;
        let docs: Vec<(i64, ProfileDocument)> = page
            .into_iter()
            .filter_map(|r| serde_json::from_value(r.document).ok().map(|d| (r.id, d)))
            .collect();
        let keys: Vec<spindle_model::RecordKey> =
            docs.iter().flat_map(|(_, d)| d.records.clone()).collect();
        let records = store
            .records_by_keys(&keys)
            .await
            .context("reading records")?;
        for (id, doc) in &docs {
            let mine: Vec<spindle_model::StoredRecord> = records
                .iter()
                .filter(|r| doc.records.contains(&spindle_identity::profile::key_of(r)))
                .cloned()
                .collect();
            let view = spindle_sync::membership::view(doc, &mine);
            let inside_segments = segments.evaluate(&view, now);
            if spindle_segments::evaluate(&expr, &view, now, &|s: &str| inside_segments.contains(s))
            {
                count += 1;
                if members.len() < sample {
                    let name: Vec<String> = ["first_name", "last_name"]
                        .iter()
                        .filter_map(|t| {
                            doc.traits
                                .get(*t)
                                .and_then(|v| v.value.as_str())
                                .map(str::to_owned)
                        })
                        .collect();
                    let email = doc
                        .identifiers
                        .iter()
                        .find(|i| i.kind == "email")
                        .map_or(String::new(), |i| i.value.clone());
                    members.push(format!("{id:>8}  {:<28} {email}", name.join(" ")));
                }
            }
        }
    }
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
