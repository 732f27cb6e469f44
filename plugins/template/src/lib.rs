//! A new destination plugin. Rename it, describe the vendor in `info`, map records in `sync_batch`, list
//! the vendor's host in the destination's `allow_hosts`, and put credentials in its `secrets`.

use serde::Deserialize;
use spindle_plugin_sdk::prelude::*;

/// The destination's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The vendor's API origin, e.g. `https://api.example.com`.
    pub api_base: String,
}

/// The plugin.
pub struct Plugin;

impl Destination for Plugin {
    type Config = Config;

    fn info() -> Info {
        Info::new("template", env!("CARGO_PKG_VERSION"))
            .max_batch_size(100)
            .config_schema(serde_json::json!({
                "type": "object",
                "required": ["api_base"],
                "properties": {"api_base": {"type": "string"}}
            }))
    }

    fn sync_batch(config: &Config, batch: Batch) -> Result<Vec<RecordOutcome>, BatchError> {
        let mut outcomes = Vec::new();
        for upsert in &batch.upserts {
            let Some(email) = identifier(&upsert.identifiers, "email") else {
                outcomes.push(RecordOutcome {
                    id: upsert.id.clone(),
                    outcome: Outcome::Rejected("no e-mail".into()),
                });
                continue;
            };
            let fields: serde_json::Value =
                serde_json::from_str(&upsert.fields).unwrap_or_default();
            let response = http::Request::put(&format!(
                "{}/contacts/{}",
                config.api_base,
                hash::sha256_email(email)
            ))
            .header("authorization", &format!("Bearer {}", secret("api_key")))
            .json(&serde_json::json!({"email": email, "fields": fields}))
            .send()?;
            outcomes.push(RecordOutcome {
                id: upsert.id.clone(),
                outcome: outcome_for_status(&response),
            });
        }
        for removal in &batch.removals {
            let Some(email) = identifier(&removal.identifiers, "email") else {
                outcomes.push(RecordOutcome {
                    id: removal.id.clone(),
                    outcome: Outcome::Rejected("no e-mail".into()),
                });
                continue;
            };
            let response = http::Request::delete(&format!(
                "{}/contacts/{}",
                config.api_base,
                hash::sha256_email(email)
            ))
            .header("authorization", &format!("Bearer {}", secret("api_key")))
            .send()?;
            outcomes.push(RecordOutcome {
                id: removal.id.clone(),
                outcome: outcome_for_status(&response),
            });
        }
        Ok(outcomes)
    }
}

spindle_plugin_sdk::export!(Plugin);
