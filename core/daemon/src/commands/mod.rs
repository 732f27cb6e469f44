//! One module per command group. Shared here: opening the store the way every command does.

pub mod config;
pub mod demo;
pub mod plugin;
pub mod profiles;
pub mod run;
pub mod sources;
pub mod store;
pub mod syncs;
pub mod validate;

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use spindle_config::Config;
use spindle_store::{OpenOptions, SqlStore, StoreLock};

/// Takes the embedded store's lock, so two daemons (or a daemon and a manual sync) never write the same
/// SQLite file at once. PostgreSQL stores need no lock file. Fails when another process holds it.
pub fn lock_store(config: &Config) -> anyhow::Result<Option<StoreLock>> {
    let Some(path) = config.store.url.sqlite_path() else {
        return Ok(None);
    };
    match StoreLock::try_acquire(path)? {
        Some(lock) => Ok(Some(lock)),
        None => anyhow::bail!(
            "another spindle process is using the store {} (lock {}); stop it first",
            path.display(),
            StoreLock::lock_path(path).display()
        ),
    }
}

/// Opens the configured store and runs its migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<SqlStore>> {
    let options = OpenOptions {
        max_connections: config.store.max_connections,
        busy_timeout: config.store.busy_timeout,
    };
    let store = SqlStore::open(&config.store.url, &options)
        .await
        .with_context(|| format!("opening the store {}", config.store.url.redacted()))?;
    Ok(Arc::new(store))
}

/// Writes a command's answer to standard output.
pub fn print(text: &str) -> Result<(), crate::Failure> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing to standard output")?;
    Ok(())
}

/// Who is acting, for the audit log.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}
