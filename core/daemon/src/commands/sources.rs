//! `spindle sources list|sync`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use spindle_model::{JobCounts, JobId, JobStatus, JobTrigger, NewAuditEntry};
use spindle_scheduler::SystemClock;
use spindle_sources::Progress;
use spindle_store::ProfileStore;
use tokio_util::sync::CancellationToken;

use crate::commands::{cli_actor, lock_store, open_store};
use crate::executor::DaemonExecutor;
use crate::{Failure, load_config};

/// Prints one block per source.
pub async fn list(path: &Path) -> Result<(), Failure> {
    let config = load_config(path)?;
    let store = open_store(&config).await?;
    let mut out = String::new();
    for (id, source) in &config.sources {
        let schedule = source.schedule.as_ref().map_or_else(
            || "on demand".to_owned(),
            |s| format!("{} ({})", s.expression(), s.timezone()),
        );
        let records = store
            .count_records(Some(id))
            .await
            .context("counting records")?;
        let last = store
            .last_run(&JobId::source(id))
            .await
            .context("reading runs")?;
        let last = match last {
            None => "never ran".to_owned(),
            Some(run) => format!(
                "{} at {} (read {}, inserted {}, updated {}, quarantined {}){}",
                run.status.as_str(),
                run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                run.counts.read,
                run.counts.inserted,
                run.counts.updated,
                run.counts.quarantined,
                run.error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
        };
        out.push_str(&format!(
            "{id}  kind={}  schedule={schedule}\n",
            source.kind()
        ));
        out.push_str(&format!("  records:  {records}\n  last run: {last}\n"));
        for cursor in store.cursors(id).await.context("reading cursors")? {
            out.push_str(&format!(
                "  cursor:   {} = {}\n",
                cursor.stream, cursor.position
            ));
        }
    }
    if config.sources.is_empty() {
        out.push_str("no sources are configured\n");
    }
    store.close().await;
    std::io::stdout()
        .write_all(out.as_bytes())
        .context("writing to standard output")?;
    Ok(())
}

/// A progress bar on a terminal, plain log lines otherwise.
struct CliProgress {
    bar: Option<ProgressBar>,
}

impl Progress for CliProgress {
    fn committed(&self, stream: &str, totals: &JobCounts) {
        match &self.bar {
            Some(bar) => bar.set_message(format!(
                "{stream}: {} read, {} new, {} updated, {} quarantined",
                totals.read, totals.inserted, totals.updated, totals.quarantined
            )),
            None => tracing::info!(
                stream,
                read = totals.read,
                inserted = totals.inserted,
                updated = totals.updated,
                quarantined = totals.quarantined,
                "batch committed"
            ),
        }
    }
}

/// Pulls one source now, optionally from the beginning.
pub async fn sync(path: &Path, id: &str, full: bool) -> Result<(), Failure> {
    let config = std::sync::Arc::new(load_config(path)?);
    if !config.sources.contains_key(id) {
        let known: Vec<&str> = config.sources.keys().map(String::as_str).collect();
        return Err(Failure::Other(anyhow::anyhow!(
            "there is no source `{id}` in {}; sources: {}",
            path.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    let _lock = lock_store(&config)?;
    let store = open_store(&config).await?;
    if full {
        let removed = store.reset_cursors(id).await.context("resetting cursors")?;
        store
            .append_audit(NewAuditEntry {
                actor: cli_actor(),
                action: "source.full_resync".into(),
                target: id.to_owned(),
                details: serde_json::json!({ "cursors_reset": removed }),
            })
            .await
            .context("recording the full re-sync in the audit log")?;
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let progress = CliProgress { bar };
    let cancel = CancellationToken::new();
    let watcher = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        })
    };
    let executor = DaemonExecutor::new(
        config.clone(),
        store.clone(),
        std::sync::Arc::new(SystemClock),
    );
    let span = tracing::info_span!("job", job = %JobId::source(id), trigger = "manual");
    let (status, counts, error) = {
        let _entered = span.enter();
        executor
            .execute(
                &JobId::source(id),
                JobTrigger::Manual,
                Utc::now(),
                &cancel,
                &progress,
            )
            .await
    };
    watcher.abort();
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    store.close().await;
    let line = format!(
        "{id}: {} — read {}, inserted {}, updated {}, unchanged {}, quarantined {}",
        status.as_str(),
        counts.read,
        counts.inserted,
        counts.updated,
        counts.unchanged,
        counts.quarantined
    );
    writeln!(std::io::stdout(), "{line}").context("writing to standard output")?;
    match (status, error) {
        (JobStatus::Failed, Some(error)) => Err(Failure::Other(anyhow::anyhow!("{error}"))),
        _ => Ok(()),
    }
}
