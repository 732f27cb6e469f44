//! `spindle validate [--check-connections]`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use spindle_config::store_url::Backend;
use spindle_sources::build_source;

use crate::{Failure, load_config};

/// Validates the file; with `check_connections`, also probes the store and each source read-only.
pub async fn run(path: &Path, check_connections: bool) -> Result<(), Failure> {
    let config = load_config(path)?;
    let mut out = std::io::stdout().lock();
    let summary = format!(
        "{} is valid: {} source(s), {} destination(s), {} segment(s), {} sync(s); store {}",
        path.display(),
        config.sources.len(),
        config.destinations.len(),
        config.segments.len(),
        config.syncs.len(),
        config.store.url.redacted()
    );
    writeln!(out, "{summary}").context("writing to standard output")?;
    if !check_connections {
        return Ok(());
    }
    let mut failed = 0;
    let store_result = match config.store.url.backend() {
        Backend::Sqlite => match config.store.url.sqlite_path() {
            Some(p) if p.exists() => spindle_store::SqlStore::probe(&config.store.url)
                .await
                .map(|()| "reachable".to_owned()),
            _ => Ok("does not exist yet; `spindle run` creates it".to_owned()),
        },
        Backend::Postgres => spindle_store::SqlStore::probe(&config.store.url)
            .await
            .map(|()| "reachable".to_owned()),
    };
    match store_result {
        Ok(state) => writeln!(
            out,
            "  ok    store {}: {state}",
            config.store.url.redacted()
        ),
        Err(err) => {
            failed += 1;
            writeln!(out, "  FAIL  store {}: {err}", config.store.url.redacted())
        }
    }
    .context("writing to standard output")?;
    for (id, source) in &config.sources {
        let line = match build_source(source).check().await {
            Ok(()) => format!("  ok    source {id} ({})", source.kind()),
            Err(err) => {
                failed += 1;
                format!("  FAIL  source {id} ({}): {err}", source.kind())
            }
        };
        writeln!(out, "{line}").context("writing to standard output")?;
    }
    for id in config.destinations.keys() {
        writeln!(
            out,
            "  skip  destination {id}: plugin checks need the plugin host, not part of this version"
        )
        .context("writing to standard output")?;
    }
    if failed > 0 {
        return Err(Failure::Other(anyhow::anyhow!(
            "{failed} connection check(s) failed"
        )));
    }
    Ok(())
}
