//! `spindle config schema`.

use std::io::Write;

use anyhow::Context;

use crate::Failure;

/// Prints the JSON Schema of connectors.toml to standard output.
pub fn schema() -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(&spindle_config::json_schema())
        .context("serialising the schema")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("writing to standard output")?;
    Ok(())
}
