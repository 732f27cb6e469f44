//! `spindle store backup|restore`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use spindle_model::NewAuditEntry;
use spindle_store::{ProfileStore, RestoreOptions, backup_sqlite, restore_sqlite};

use crate::commands::{cli_actor, open_store};
use crate::{Failure, load_config};

/// Backs the embedded store up to `target`. The audit entry is written first, so the backup holds the
/// record of its own making; a failure is recorded too.
pub async fn backup(path: &Path, target: &Path) -> Result<(), Failure> {
    let config = load_config(path)?;
    let store = open_store(&config).await?;
    let audit = |action: &str, details: serde_json::Value| NewAuditEntry {
        actor: cli_actor(),
        action: action.into(),
        target: target.display().to_string(),
        details,
    };
    store
        .append_audit(audit("store.backup", serde_json::json!({})))
        .await
        .context("recording the backup in the audit log")?;
    let result = backup_sqlite(&config.store.url, target).await;
    if let Err(err) = &result {
        store
            .append_audit(audit(
                "store.backup_failed",
                serde_json::json!({ "error": err.to_string() }),
            ))
            .await
            .context("recording the failed backup in the audit log")?;
    }
    store.close().await;
    let bytes = result.context("backup failed")?;
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
