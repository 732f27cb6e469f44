//! `mailchimp`: audience members in a Mailchimp list (Marketing API v3).
//!
//! - Upsert: `PUT /lists/{list_id}/members/{subscriber_hash}` (MD5 of the lower-cased e-mail) with
//!   `email_address`, `status_if_new` and `merge_fields` from the sync's field mapping; then the configured
//!   `tags` through `POST …/members/{hash}/tags`. Batches larger than `batch_threshold` go through batch
//!   subscribe (`POST /lists/{list_id}` with up to 500 members and `update_existing`), whose per-member
//!   errors become per-record rejections.
//! - Removal (mirror mode): `DELETE /lists/{list_id}/members/{hash}` archives the member (a missing member
//!   counts as removed).
//! - Erasure: `POST …/members/{hash}/actions/delete-permanent`.
//! - Auth: HTTP Basic `anystring:<API key>`, filled in by the host from the destination's secret
//!   (`api_key` by default); the plugin never holds the key.
//! - Answers: 2xx delivered; 401/403 fail the batch as unauthorized; 429 (Mailchimp's 10-connection limit,
//!   no `Retry-After`) and 5xx are retried by the host; other 4xx reject the record with Mailchimp's
//!   `detail` (and field errors).

use serde::Deserialize;
use spindle_plugin_sdk::prelude::*;

/// The destination's `config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data center, the suffix of the API key (`us21` for `…-us21`). Give this or `base_url`.
    #[serde(default)]
    pub dc: Option<String>,
    /// API root, e.g. `https://us21.api.mailchimp.com/3.0` (for proxies and tests).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The audience (list) id.
    pub list_id: String,
    /// Status given to new members: `subscribed`, `pending`, `unsubscribed` or `transactional`.
    #[serde(default = "default_status")]
    pub status_if_new: String,
    /// Tags set on every member sent.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Batches with more upserts than this use batch subscribe.
    #[serde(default = "default_threshold")]
    pub batch_threshold: usize,
    /// Name of the destination secret holding the API key.
    #[serde(default = "default_secret")]
    pub api_key_secret: String,
}

fn default_status() -> String {
    "subscribed".into()
}

fn default_threshold() -> usize {
    50
}

fn default_secret() -> String {
    "api_key".into()
}

/// Batch subscribe's own limit.
const BATCH_SUBSCRIBE_MAX: usize = 500;

impl Config {
    fn root(&self) -> Result<String, String> {
        match (&self.base_url, &self.dc) {
            (Some(base), None) => Ok(base.trim_end_matches('/').to_owned()),
            (None, Some(dc)) if !dc.is_empty() && dc.chars().all(|c| c.is_ascii_alphanumeric()) => {
                Ok(format!("https://{dc}.api.mailchimp.com/3.0"))
            }
            (None, Some(dc)) => Err(format!(
                "`dc` must be the API key's suffix such as `us21`, got `{dc}`"
            )),
            (Some(_), Some(_)) => Err("give `dc` or `base_url`, not both".into()),
            (None, None) => Err("`dc` is required: the suffix of the API key, e.g. `us21`".into()),
        }
    }

    fn auth(&self) -> String {
        format!("Basic {{{{basic:anystring:{}}}}}", self.api_key_secret)
    }
}

/// The member URL of an e-mail.
fn member_url(root: &str, list: &str, email: &str) -> String {
    format!(
        "{root}/lists/{list}/members/{}",
        hash::mailchimp_subscriber_hash(email)
    )
}

/// Mailchimp's problem detail (`detail` plus field errors), for rejection reasons.
fn problem(response: &http::Response) -> String {
    let body: serde_json::Value = response.json().unwrap_or_default();
    let detail = body
        .get("detail")
        .and_then(|d| d.as_str())
        .unwrap_or("")
        .to_owned();
    let fields: Vec<String> = body
        .get("errors")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}: {}",
                e["field"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let text = if fields.is_empty() {
        detail
    } else {
        format!("{detail} ({})", fields.join("; "))
    };
    format!("{} {}", response.status, text.trim())
}

/// What one answer means for the records it covers; `Err` for answers that end the whole batch.
fn classify(response: &http::Response) -> Result<Outcome, BatchError> {
    match response.status {
        200..=299 => Ok(Outcome::Delivered),
        401 | 403 => Err(BatchError::Unauthorized(problem(response))),
        429 | 500..=599 => Ok(Outcome::Retry(response.retry_after())),
        _ => Ok(Outcome::Rejected(problem(response))),
    }
}

fn upsert_one(config: &Config, root: &str, upsert: &Upsert) -> Result<Outcome, BatchError> {
    let Some(email) = identifier(&upsert.identifiers, "email") else {
        return Ok(Outcome::Rejected(
            "no e-mail address: Mailchimp members are keyed by e-mail".into(),
        ));
    };
    let merge_fields: serde_json::Value =
        serde_json::from_str(&upsert.fields).unwrap_or_else(|_| serde_json::json!({}));
    let url = member_url(root, &config.list_id, email);
    let body = serde_json::json!({"email_address": email, "status_if_new": config.status_if_new, "merge_fields": merge_fields});
    let response = http::Request::put(&url)
        .header("authorization", &config.auth())
        .json(&body)
        .send()?;
    let outcome = classify(&response)?;
    if !matches!(outcome, Outcome::Delivered) || config.tags.is_empty() {
        return Ok(outcome);
    }
    let tags: Vec<serde_json::Value> = config
        .tags
        .iter()
        .map(|t| serde_json::json!({"name": t, "status": "active"}))
        .collect();
    let response = http::Request::post(&format!("{url}/tags"))
        .header("authorization", &config.auth())
        .json(&serde_json::json!({"tags": tags, "is_syncing": false}))
        .send()?;
    classify(&response)
}

fn batch_subscribe(
    config: &Config,
    root: &str,
    upserts: &[Upsert],
    outcomes: &mut Vec<RecordOutcome>,
) -> Result<(), BatchError> {
    let mut by_email: Vec<(String, String)> = Vec::new();
    let mut members = Vec::new();
    for upsert in upserts {
        let Some(email) = identifier(&upsert.identifiers, "email") else {
            outcomes.push(RecordOutcome {
                id: upsert.id.clone(),
                outcome: Outcome::Rejected("no e-mail address".into()),
            });
            continue;
        };
        let merge_fields: serde_json::Value =
            serde_json::from_str(&upsert.fields).unwrap_or_else(|_| serde_json::json!({}));
        let mut member = serde_json::json!({"email_address": email, "status": config.status_if_new, "merge_fields": merge_fields});
        if !config.tags.is_empty() {
            member["tags"] = serde_json::json!(config.tags);
        }
        members.push(member);
        by_email.push((email.to_lowercase(), upsert.id.clone()));
    }
    for (chunk, ids) in members
        .chunks(BATCH_SUBSCRIBE_MAX)
        .zip(by_email.chunks(BATCH_SUBSCRIBE_MAX))
    {
        let response = http::Request::post(&format!("{root}/lists/{}", config.list_id))
            .header("authorization", &config.auth())
            .json(&serde_json::json!({"members": chunk, "update_existing": true}))
            .send()?;
        let outcome = classify(&response)?;
        if !matches!(outcome, Outcome::Delivered) {
            outcomes.extend(ids.iter().map(|(_, id)| RecordOutcome {
                id: id.clone(),
                outcome: outcome.clone(),
            }));
            continue;
        }
        let body: serde_json::Value = response.json().map_err(BatchError::Fatal)?;
        let errors: Vec<(String, String)> = body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["email_address"].as_str().unwrap_or("").to_lowercase(),
                    format!(
                        "{} {}",
                        e["error_code"].as_str().unwrap_or(""),
                        e["error"].as_str().unwrap_or("")
                    )
                    .trim()
                    .to_owned(),
                )
            })
            .collect();
        for (email, id) in ids {
            let outcome = match errors.iter().find(|(e, _)| e == email) {
                Some((_, reason)) => Outcome::Rejected(reason.clone()),
                None => Outcome::Delivered,
            };
            outcomes.push(RecordOutcome {
                id: id.clone(),
                outcome,
            });
        }
    }
    Ok(())
}

/// The plugin.
pub struct Mailchimp;

impl Destination for Mailchimp {
    type Config = Config;

    fn info() -> Info {
        Info::new("mailchimp", env!("CARGO_PKG_VERSION")).max_batch_size(500).config_schema(serde_json::json!({
            "type": "object",
            "required": ["list_id"],
            "additionalProperties": false,
            "properties": {
                "dc": {"type": "string", "description": "Data center: the API key's suffix, e.g. us21"},
                "base_url": {"type": "string", "description": "API root instead of https://{dc}.api.mailchimp.com/3.0"},
                "list_id": {"type": "string", "description": "Audience id"},
                "status_if_new": {"enum": ["subscribed", "pending", "unsubscribed", "transactional"], "default": "subscribed"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "batch_threshold": {"type": "integer", "minimum": 0, "default": 50},
                "api_key_secret": {"type": "string", "default": "api_key"}
            }
        }))
    }

    fn validate(config: &Config) -> Result<(), String> {
        config.root()?;
        if config.list_id.trim().is_empty() {
            return Err("`list_id` is empty".into());
        }
        if !["subscribed", "pending", "unsubscribed", "transactional"]
            .contains(&config.status_if_new.as_str())
        {
            return Err(format!(
                "`status_if_new` must be subscribed, pending, unsubscribed or transactional, got `{}`",
                config.status_if_new
            ));
        }
        Ok(())
    }

    fn sync_batch(config: &Config, batch: Batch) -> Result<Vec<RecordOutcome>, BatchError> {
        Self::validate(config).map_err(BatchError::InvalidConfig)?;
        let root = config.root().map_err(BatchError::InvalidConfig)?;
        let mut outcomes = Vec::with_capacity(batch.upserts.len() + batch.removals.len());
        if batch.upserts.len() > config.batch_threshold {
            batch_subscribe(config, &root, &batch.upserts, &mut outcomes)?;
        } else {
            for upsert in &batch.upserts {
                outcomes.push(RecordOutcome {
                    id: upsert.id.clone(),
                    outcome: upsert_one(config, &root, upsert)?,
                });
            }
        }
        for removal in &batch.removals {
            let outcome = match identifier(&removal.identifiers, "email") {
                None => Outcome::Rejected("no e-mail address".into()),
                Some(email) => {
                    let response =
                        http::Request::delete(&member_url(&root, &config.list_id, email))
                            .header("authorization", &config.auth())
                            .send()?;
                    if response.status == 404 {
                        Outcome::Delivered
                    } else {
                        classify(&response)?
                    }
                }
            };
            outcomes.push(RecordOutcome {
                id: removal.id.clone(),
                outcome,
            });
        }
        Ok(outcomes)
    }

    fn delete_subjects(
        config: &Config,
        subjects: Vec<Vec<Identifier>>,
    ) -> Result<Vec<Outcome>, BatchError> {
        let root = config.root().map_err(BatchError::InvalidConfig)?;
        let mut outcomes = Vec::with_capacity(subjects.len());
        for subject in &subjects {
            let outcome = match identifier(subject, "email") {
                None => Outcome::Rejected("no e-mail address".into()),
                Some(email) => {
                    let url = format!(
                        "{}/actions/delete-permanent",
                        member_url(&root, &config.list_id, email)
                    );
                    let response = http::Request::post(&url)
                        .header("authorization", &config.auth())
                        .send()?;
                    if response.status == 404 {
                        Outcome::Delivered
                    } else {
                        classify(&response)?
                    }
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

spindle_plugin_sdk::export!(Mailchimp);
