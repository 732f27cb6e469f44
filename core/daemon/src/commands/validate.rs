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
    let plugin_problems = check_destinations(&config, &mut out).await?;
    if plugin_problems > 0 {
        return Err(Failure::InvalidConfig);
    }
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

/// Loads each destination's plugin (when built) and asks it to validate the destination's `config`.
/// Returns how many destinations have a config their plugin refuses or a plugin that cannot load.
async fn check_destinations(
    config: &spindle_config::Config,
    out: &mut impl Write,
) -> Result<usize, Failure> {
    if config.destinations.is_empty() {
        return Ok(0);
    }
    let config_dir = config
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let host =
        spindle_plugin_host::PluginHost::new(Some(crate::commands::plugin::cache_dir(config_dir)))
            .context("starting the plugin engine")?;
    let mut problems = 0;
    for (id, destination) in &config.destinations {
        let path = match spindle_plugin_host::locate(&destination.plugin, config_dir) {
            Ok(path) => path,
            Err(err) => {
                writeln!(
                    out,
                    "  note  destination {id}: {err}; its config was not checked"
                )
                .context("writing to standard output")?;
                continue;
            }
        };
        let limits = crate::commands::plugin::call_limits(destination);
        let checked = match host.load(&path) {
            Ok(plugin) => host
                .validate_config(&plugin, &limits, &destination.config.to_string())
                .await
                .map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        let line = match checked {
            Ok(Ok(())) => format!("  ok    destination {id} (plugin {})", destination.plugin),
            Ok(Err(reason)) => {
                problems += 1;
                format!(
                    "error: destination {id}: plugin {} refuses its config: {reason}",
                    destination.plugin
                )
            }
            Err(reason) => {
                problems += 1;
                format!("error: destination {id}: {reason}")
            }
        };
        writeln!(out, "{line}").context("writing to standard output")?;
    }
    Ok(problems)
}
