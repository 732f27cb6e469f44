//! HubSpot CRM v3 (`kind = "hubspot"`): contacts and companies.
//!
//! Contract:
//! - First sync: the list endpoint (`GET /crm/v3/objects/{type}`), 100 per page, contacts with their company
//!   associations inline. Then one pass over archived objects (`archived=true`), marked deleted.
//! - Incremental syncs: the search endpoint on the modified-date property (`lastmodifieddate` for contacts,
//!   `hs_lastmodifieddate` for companies) within a closed window `[since, until]`. `until` is fixed when the
//!   window starts (a few seconds in the past, as search indexing lags), so a record modified while a window
//!   is being read falls in the next one. The next window starts `OVERLAP` before the previous end, and the
//!   store's version check (`version` = modified time in ms) drops what was already read, so ties on the same
//!   millisecond are neither skipped nor duplicated. Results are sorted by `hs_object_id`; before the search's
//!   10,000-result cap, the walk restarts at offset 0 with `hs_object_id > last id`, as real connectors do.
//!   Search answers carry no associations, so they are read per page from the v4 batch endpoint.
//! - Every page is one pull: its records and the cursor after it commit together.
//! - Rate: the configured budget per rolling 10 seconds, slowed further by `X-HubSpot-RateLimit-Remaining`.

mod cursor;
mod mapping;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use spindle_config::{HubspotAuth, HubspotSettings};
use spindle_model::Cursor;
use spindle_store::SourceBatch;

use self::cursor::Phase;
use crate::http::{
    Auth, HttpClient, HttpError, HttpOptions, HttpRequest, OAuthRefresh, RateLimitHeaders,
};
use crate::{Next, Pull, Source, SourceError};

/// Records read again at the start of each incremental window.
const OVERLAP: Duration = Duration::from_secs(60);
/// How far behind "now" a search window ends, as newly written records take a moment to become searchable.
const INDEXING_LAG: Duration = Duration::from_secs(5);
/// Page size of the list endpoint (its maximum).
const LIST_LIMIT: u32 = 100;
/// Page size of the search endpoint (its maximum).
const SEARCH_LIMIT: u32 = 200;
/// Results one search query can page through.
const SEARCH_CAP: u32 = 10_000;

/// The HubSpot source.
#[derive(Debug)]
pub struct HubspotSource {
    id: String,
    settings: HubspotSettings,
    http: Result<Arc<HttpClient>, HttpError>,
}

/// Slows down when the rolling window is nearly used up.
struct HubspotHeaders;

impl RateLimitHeaders for HubspotHeaders {
    fn pause_after(&self, headers: &HeaderMap) -> Option<Duration> {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        let max = number("x-hubspot-ratelimit-max")?;
        let remaining = number("x-hubspot-ratelimit-remaining")?;
        let interval = number("x-hubspot-ratelimit-interval-milliseconds").unwrap_or(10_000);
        // Under 5% of the window left: space requests at the window's average rate.
        (max > 0 && remaining * 20 < max).then(|| Duration::from_millis(interval / max))
    }
}

/// The object types this connector reads and their modified-date property.
pub(crate) fn modified_property(object: &str) -> &'static str {
    if object == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    results: Vec<serde_json::Value>,
    paging: Option<Paging>,
}

#[derive(Debug, Deserialize)]
struct Paging {
    next: Option<PagingNext>,
}

#[derive(Debug, Deserialize)]
struct PagingNext {
    after: String,
}

impl HubspotSource {
    /// A HubSpot source with the id it has in `connectors.toml` (used for `<id>_id` identifiers).
    pub fn new(id: &str, settings: HubspotSettings) -> Self {
        let auth = match &settings.auth {
            HubspotAuth::PrivateApp(token) => Ok(Auth::bearer(token.clone())),
            HubspotAuth::OAuth {
                client_id,
                client_secret,
                refresh_token,
            } => url::Url::parse(&format!("{}/oauth/v1/token", settings.base_url))
                .map(|token_url| {
                    Auth::oauth(OAuthRefresh {
                        token_url,
                        client_id: client_id.clone(),
                        client_secret: client_secret.clone(),
                        refresh_token: refresh_token.clone(),
                    })
                })
                .map_err(|err| HttpError::Setup(err.to_string())),
        };
        let options = HttpOptions {
            requests: settings.requests_per_10s,
            per: Duration::from_secs(10),
            // Keep a little of the window for other clients of the same account.
            burst: (settings.requests_per_10s / 10).max(1),
            ..HttpOptions::default()
        };
        let http = auth
            .and_then(|auth| HttpClient::new(id, options, auth, Some(Box::new(HubspotHeaders))));
        Self {
            id: id.to_owned(),
            settings,
            http,
        }
    }

    fn http(&self) -> Result<&HttpClient, SourceError> {
        self.http
            .as_deref()
            .map_err(|err| SourceError::Http(err.clone()))
    }

    fn url(&self, path: &str) -> Result<url::Url, SourceError> {
        url::Url::parse(&format!("{}{path}", self.settings.base_url))
            .map_err(|err| SourceError::Mismatch(format!("invalid HubSpot url: {err}")))
    }

    async fn list_page(
        &self,
        object: &str,
        after: Option<&str>,
        archived: bool,
    ) -> Result<Page, SourceError> {
        let mut url = self.url(&format!("/crm/v3/objects/{object}"))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &LIST_LIMIT.to_string());
            query.append_pair("properties", &mapping::properties(object).join(","));
            if object == "contacts" {
                query.append_pair("associations", "companies");
            }
            if archived {
                query.append_pair("archived", "true");
            }
            if let Some(after) = after {
                query.append_pair("after", after);
            }
        }
        Ok(self.http()?.send(&HttpRequest::get(url)).await?.json()?)
    }

    async fn search_page(
        &self,
        object: &str,
        window: &cursor::SearchWindow,
    ) -> Result<Page, SourceError> {
        let modified = modified_property(object);
        let mut filters = vec![
            serde_json::json!({"propertyName": modified, "operator": "GTE", "value": window.since_ms.to_string()}),
            serde_json::json!({"propertyName": modified, "operator": "LTE", "value": window.until_ms.to_string()}),
        ];
        if let Some(min_id) = window.after_id {
            filters.push(serde_json::json!({"propertyName": "hs_object_id", "operator": "GT", "value": min_id.to_string()}));
        }
        let body = serde_json::json!({
            "filterGroups": [{ "filters": filters }],
            "sorts": [{ "propertyName": "hs_object_id", "direction": "ASCENDING" }],
            "properties": mapping::properties(object),
            "limit": SEARCH_LIMIT,
            "after": window.offset.to_string(),
        });
        let url = self.url(&format!("/crm/v3/objects/{object}/search"))?;
        Ok(self
            .http()?
            .send(&HttpRequest::post_json(url, body))
            .await?
            .json()?)
    }

    /// Company ids of each contact, from the v4 batch endpoint (search results carry no associations).
    async fn associations(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<String>>, SourceError> {
        let mut out = std::collections::HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let url = self.url("/crm/v4/associations/contacts/companies/batch/read")?;
        let inputs: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({ "id": id }))
            .collect();
        for chunk in inputs.chunks(1000) {
            let response = self
                .http()?
                .send(&HttpRequest::post_json(
                    url.clone(),
                    serde_json::json!({ "inputs": chunk }),
                ))
                .await?;
            let body: serde_json::Value = response.json()?;
            for result in body
                .get("results")
                .and_then(|r| r.as_array())
                .into_iter()
                .flatten()
            {
                let Some(from) = result.pointer("/from/id").and_then(json_id) else {
                    continue;
                };
                let to: Vec<String> = result
                    .get("to")
                    .and_then(|t| t.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.get("toObjectId").and_then(json_id))
                    .collect();
                out.insert(from, to);
            }
        }
        Ok(out)
    }

    async fn pull_phase(&self, object: &str, phase: Phase) -> Result<Pull, SourceError> {
        let now_ms = Utc::now().timestamp_millis();
        let lag_ms = INDEXING_LAG.as_millis() as i64;
        let overlap_ms = OVERLAP.as_millis() as i64;
        let mut batch = SourceBatch::default();
        let (next_phase, next) = match phase {
            Phase::List { after, started_ms } => {
                let started_ms = started_ms.unwrap_or(now_ms);
                let page = self.list_page(object, after.as_deref(), false).await?;
                mapping::map_page(&self.id, object, &page.results, None, false, &mut batch);
                match page.paging.and_then(|p| p.next) {
                    Some(next) => (
                        Phase::List {
                            after: Some(next.after),
                            started_ms: Some(started_ms),
                        },
                        Next::More,
                    ),
                    None => (
                        Phase::Archived {
                            after: None,
                            next_since_ms: started_ms - lag_ms - overlap_ms,
                        },
                        Next::More,
                    ),
                }
            }
            Phase::Archived {
                after,
                next_since_ms,
            } => {
                let page = self.list_page(object, after.as_deref(), true).await?;
                mapping::map_page(&self.id, object, &page.results, None, true, &mut batch);
                match page.paging.and_then(|p| p.next) {
                    Some(next) => (
                        Phase::Archived {
                            after: Some(next.after),
                            next_since_ms,
                        },
                        Next::More,
                    ),
                    None => (
                        Phase::Search {
                            since_ms: next_since_ms,
                            window: None,
                        },
                        Next::Done,
                    ),
                }
            }
            Phase::Search { since_ms, window } => {
                let window = match window {
                    Some(window) => window,
                    None => {
                        let until_ms = now_ms - lag_ms;
                        if until_ms <= since_ms {
                            return Ok(Pull {
                                batch,
                                next: Next::Done,
                            });
                        }
                        cursor::SearchWindow {
                            since_ms,
                            until_ms,
                            after_id: None,
                            offset: 0,
                        }
                    }
                };
                let page = self.search_page(object, &window).await?;
                let associations = if object == "contacts" {
                    let ids: Vec<String> = page
                        .results
                        .iter()
                        .filter_map(|r| r.get("id").and_then(json_id))
                        .collect();
                    Some(self.associations(&ids).await?)
                } else {
                    None
                };
                mapping::map_page(
                    &self.id,
                    object,
                    &page.results,
                    associations.as_ref(),
                    false,
                    &mut batch,
                );
                let last_id = page
                    .results
                    .iter()
                    .rev()
                    .find_map(|r| r.get("id").and_then(json_id))
                    .and_then(|id| id.parse::<u64>().ok());
                match page
                    .paging
                    .and_then(|p| p.next)
                    .and_then(|n| n.after.parse::<u32>().ok())
                {
                    Some(offset) if offset + SEARCH_LIMIT <= SEARCH_CAP => (
                        Phase::Search {
                            since_ms,
                            window: Some(cursor::SearchWindow { offset, ..window }),
                        },
                        Next::More,
                    ),
                    // Near the 10,000-result cap: restart the same window after the last id read.
                    Some(_) => (
                        Phase::Search {
                            since_ms,
                            window: Some(cursor::SearchWindow {
                                after_id: last_id.or(window.after_id),
                                offset: 0,
                                ..window
                            }),
                        },
                        Next::More,
                    ),
                    None => (
                        Phase::Archived {
                            after: None,
                            next_since_ms: window.until_ms - overlap_ms,
                        },
                        Next::More,
                    ),
                }
            }
        };
        batch.cursors.push(Cursor {
            stream: object.to_owned(),
            position: next_phase.to_json(),
        });
        Ok(Pull { batch, next })
    }
}

/// HubSpot ids arrive as strings (objects) or numbers (v4 associations).
pub(crate) fn json_id(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[async_trait]
impl Source for HubspotSource {
    fn kind(&self) -> &'static str {
        "hubspot"
    }

    fn streams(&self) -> Vec<String> {
        self.settings.objects.clone()
    }

    async fn pull(&mut self, stream: &str, cursor: Option<&Cursor>) -> Result<Pull, SourceError> {
        let phase = Phase::from_cursor(cursor);
        self.pull_phase(stream, phase).await
    }

    async fn check(&self) -> Result<(), SourceError> {
        let object = self
            .settings
            .objects
            .first()
            .map_or("contacts", String::as_str);
        let mut url = self.url(&format!("/crm/v3/objects/{object}"))?;
        url.query_pairs_mut().append_pair("limit", "1");
        self.http()?.send(&HttpRequest::get(url)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
