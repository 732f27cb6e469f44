//! `webhook`: POSTs each batch as JSON to a configured URL, signed with HMAC-SHA256, for any system that
//! has no dedicated plugin.
//!
//! Body: `{"mode": "upsert", "upserts": [{"id", "identifiers": {"email": "..."}, "fields": {...}}],
//! "removals": [{"id", "identifiers": {...}}]}`. Header `X-Spindle-Signature: sha256=<hex>` is the
//! HMAC-SHA256 of the body keyed with the destination's secret `signing_key` (computed by the host; the
//! plugin never holds the key). A 2xx answer delivers the batch; 429 and 5xx ask for a retry (with
//! `Retry-After`); another 4xx rejects it with the answer's text.

use std::collections::BTreeMap;

use serde::Deserialize;
use spindle_plugin_sdk::prelude::*;

/// The destination's `config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where batches are POSTed.
    pub url: String,
    /// The signature header's name.
    #[serde(default = "default_header")]
    pub signature_header: String,
    /// The secret that keys the signature; `null` or `""` sends unsigned requests.
    #[serde(default = "default_secret")]
    pub signing_secret: Option<String>,
}

fn default_header() -> String {
    "X-Spindle-Signature".into()
}

fn default_secret() -> Option<String> {
    Some("signing_key".into())
}

fn identifiers(list: &[Identifier]) -> BTreeMap<&str, &str> {
    list.iter()
        .map(|i| (i.kind.as_str(), i.value.as_str()))
        .collect()
}

/// The JSON body of a batch.
pub fn body(batch: &Batch) -> serde_json::Value {
    let mode = match batch.mode {
        SyncMode::Upsert => "upsert",
        SyncMode::Mirror => "mirror",
        SyncMode::AddOnly => "add_only",
    };
    let upserts: Vec<serde_json::Value> = batch
        .upserts
        .iter()
        .map(|u| {
            let fields: serde_json::Value = serde_json::from_str(&u.fields).unwrap_or_default();
            serde_json::json!({"id": u.id, "identifiers": identifiers(&u.identifiers), "fields": fields})
        })
        .collect();
    let removals: Vec<serde_json::Value> = batch
        .removals
        .iter()
        .map(|r| serde_json::json!({"id": r.id, "identifiers": identifiers(&r.identifiers)}))
        .collect();
    serde_json::json!({"mode": mode, "upserts": upserts, "removals": removals})
}

/// The plugin.
pub struct Webhook;

impl Destination for Webhook {
    type Config = Config;

    fn info() -> Info {
        Info::new("webhook", env!("CARGO_PKG_VERSION")).max_batch_size(1000).config_schema(serde_json::json!({
            "type": "object",
            "required": ["url"],
            "additionalProperties": false,
            "properties": {
                "url": {"type": "string", "description": "Where batches are POSTed"},
                "signature_header": {"type": "string", "default": "X-Spindle-Signature"},
                "signing_secret": {"type": ["string", "null"], "default": "signing_key", "description": "Name of the secret that keys the HMAC"}
            }
        }))
    }

    fn validate(config: &Config) -> Result<(), String> {
        if !(config.url.starts_with("https://") || config.url.starts_with("http://")) {
            return Err(format!(
                "`url` must be an http(s) URL, got `{}`",
                config.url
            ));
        }
        Ok(())
    }

    fn sync_batch(config: &Config, batch: Batch) -> Result<Vec<RecordOutcome>, BatchError> {
        let mut request = http::Request::post(&config.url).json(&body(&batch));
        if let Some(secret) = config.signing_secret.as_deref().filter(|s| !s.is_empty()) {
            request = request.header(
                &config.signature_header,
                &format!("sha256={{{{hmac-sha256:{secret}}}}}"),
            );
        }
        let response = request.send()?;
        match response.status {
            401 | 403 => Err(BatchError::Unauthorized(response.text())),
            _ => Ok(all(&batch, outcome_for_status(&response))),
        }
    }
}

spindle_plugin_sdk::export!(Webhook);
