//! `spindle demo`: the whole chain on one machine, offline.
//!
//! 1. Builds the destination plugins the configuration names when no compiled `.wasm` is found and the
//!    configuration sits beside the plugin workspace (`plugins/Cargo.toml`), as in a clone of the repository.
//! 2. Starts a local **inbox**: an HTTP endpoint that stands in for the destination system. It accepts the
//!    webhook plugin's JSON batches (`{"mode", "upserts": [...], "removals": [...]}`) on any path, keeps
//!    them, and answers 200.
//! 3. Runs every source, then every sync, once (exactly `spindle run --once`), which prints its summary.
//! 4. Prints what the inbox received.
//!
//! The inbox listens on `--inbox` (default `127.0.0.1:8787`, the address the example configuration's
//! destination points at). It serves only while the command runs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::body::Bytes;
use axum::http::Uri;
use spindle_plugin_host::{PluginError, locate};

use crate::commands::{plugin, print, run};
use crate::{Failure, load_config};

/// One batch the inbox received.
#[derive(Debug, Clone)]
struct Delivery {
    path: String,
    upserts: Vec<serde_json::Value>,
    removals: usize,
}

type Inbox = Arc<Mutex<Vec<Delivery>>>;

/// Builds every plugin the configuration uses that cannot be found, from the plugin workspace beside it.
fn build_missing_plugins(
    config: &spindle_config::Config,
    config_dir: &Path,
) -> Result<(), Failure> {
    let workspace = config_dir.join("plugins");
    let mut missing = Vec::new();
    for destination in config.destinations.values() {
        match locate(&destination.plugin, config_dir) {
            Ok(_) => {}
            Err(PluginError::NotFound { .. })
                if workspace
                    .join(&destination.plugin)
                    .join("Cargo.toml")
                    .is_file() =>
            {
                missing.push(destination.plugin.clone());
            }
            Err(err) => {
                return Err(anyhow::anyhow!(
                    "destination `{}`: {err}; build it with `spindle plugin build`",
                    destination.id
                )
                .into());
            }
        }
    }
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    tracing::info!(plugins = ?missing, "building destination plugins (first run only)");
    plugin::build(&workspace, &missing)
}

/// Starts the inbox on `address`; it serves until the process ends.
async fn start_inbox(address: SocketAddr) -> Result<(Inbox, SocketAddr), Failure> {
    let inbox: Inbox = Arc::default();
    let received = inbox.clone();
    let app = axum::Router::new().fallback(axum::routing::post(
        move |uri: Uri, body: Bytes| async move {
            let batch: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let upserts = batch["upserts"].as_array().cloned().unwrap_or_default();
            let removals = batch["removals"].as_array().map_or(0, Vec::len);
            tracing::info!(
                path = %uri.path(),
                upserts = upserts.len(),
                removals,
                "inbox received a batch"
            );
            if let Ok(mut log) = received.lock() {
                log.push(Delivery {
                    path: uri.path().to_owned(),
                    upserts,
                    removals,
                });
            }
            "ok"
        },
    ));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!(
                "starting the demo inbox on {address} (is the port taken? pass --inbox HOST:PORT)"
            )
        })?;
    let bound = listener.local_addr().context("reading the inbox address")?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "the demo inbox stopped");
        }
    });
    Ok((inbox, bound))
}

/// What the inbox holds, for people.
fn describe(inbox: &[Delivery], address: SocketAddr) -> String {
    let upserts: usize = inbox.iter().map(|d| d.upserts.len()).sum();
    let removals: usize = inbox.iter().map(|d| d.removals).sum();
    let mut out = format!(
        "  inbox     http://{address} received {} batch(es): {upserts} upsert(s), {removals} removal(s)\n",
        inbox.len()
    );
    for delivery in inbox {
        for upsert in &delivery.upserts {
            out.push_str(&format!(
                "            {}  {}  {}\n",
                delivery.path, upsert["identifiers"], upsert["fields"]
            ));
        }
    }
    out
}

/// Runs the example end to end against a local inbox.
pub async fn demo(path: &Path, inbox_address: SocketAddr) -> Result<(), Failure> {
    let config = load_config(path)?;
    let config_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    build_missing_plugins(&config, config_dir)?;
    let (inbox, bound) = start_inbox(inbox_address).await?;
    tracing::info!(address = %bound, "demo inbox listening");
    let result = run::run(path, true).await;
    let deliveries = inbox.lock().map(|d| d.clone()).unwrap_or_default();
    print(&describe(&deliveries, bound))?;
    result
}
