//! `spindle store backup|restore`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use spindle_model::NewAuditEntry;
use spindle_store::{ProfileStore, RestoreOptions, backup_sqlite, restore_sqlite};

use crate::commands::{cli_actor, open_store};
use crate::{Failure, load_config};

/// Backs the embedded store up to `target`.
pub async fn backup(path: &Path, target: &Path) -> Result<(), Failure> {
    let config = load_config(path)?;
    let bytes = backup_sqlite(&config.store.url, target)
        .await
        .context("backup failed")?;
    let store = open_store(&config).await?;
    store
        .append_audit(NewAuditEntry {
            actor: cli_actor(),
            action: "store.backup".into(),
            target: target.display().to_string(),
            details: serde_json::json!({ "bytes": bytes }),
        })
        .await
        .context("recording the backup in the audit log")?;
    store.close().await;
    writeln!(
        std::io::stdout(),
        "backed up {} to {} ({bytes} bytes)",
        config.store.url.redacted(),
        target.display()
    )
    .context("writing to standard output")?;
    Ok(())
}

/// Restores the embedded store from `backup`.
pub async fn restore(path: &Path, backup: &Path, force: bool) -> Result<(), Failure> {
    let config = load_config(path)?;
    let version = restore_sqlite(&config.store.url, backup, RestoreOptions { force })
        .await
        .context("restore failed")?;
    let store = open_store(&config).await?;
    store
        .append_audit(NewAuditEntry {
            actor: cli_actor(),
            action: "store.restore".into(),
            target: backup.display().to_string(),
            details: serde_json::json!({ "schema_version": version, "forced": force }),
        })
        .await
        .context("recording the restore in the audit log")?;
    store.close().await;
    writeln!(
        std::io::stdout(),
        "restored {} from {}",
        config.store.url.redacted(),
        backup.display()
    )
    .context("writing to standard output")?;
    Ok(())
}
