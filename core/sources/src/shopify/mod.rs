//! Shopify REST Admin API (`kind = "shopify"`): customers and orders.
//!
//! Contract:
//! - Each run reads a closed window of `updated_at`: from the previous window's end minus `OVERLAP` (nothing on
//!   the first run) to a moment fixed when the window starts. The first page asks
//!   `{stream}.json?limit=250&updated_at_min=…&updated_at_max=…` (orders with `status=any`, since Shopify
//!   defaults to open orders only); later pages follow the `Link: <…page_info=…>; rel="next"` URL verbatim, as
//!   Shopify requires. A record updated while a window is read falls in the next window; the overlap and the
//!   store's version check (`version` = `updated_at` in ms) make re-reads harmless and ties safe.
//! - The cursor holds the window and the next page's URL, committed with each page. A `page_info` Shopify no
//!   longer accepts (400) restarts the window.
//! - Orders become `order_completed` events (or `order_cancelled`) on the customer's timeline with amount,
//!   currency and line item count, linked by e-mail and by `<source>_id` = the customer's id.
//! - Rate: the plan's leaky bucket (size and leak rate from the config), slowed further from
//!   `X-Shopify-Shop-Api-Call-Limit`; 429 waits for `Retry-After`.

mod mapping;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use spindle_config::ShopifySettings;
use spindle_config::secret::{ExposeSecret, SecretString};
use spindle_model::Cursor;
use spindle_store::SourceBatch;

use crate::http::{Auth, HttpClient, HttpError, HttpOptions, HttpRequest, RateLimitHeaders};
use crate::{Next, Pull, Source, SourceError};

/// Records read again at the start of each window.
const OVERLAP: Duration = Duration::from_secs(60);
/// Page size (Shopify's maximum).
const PAGE_LIMIT: u32 = 250;

/// The Shopify source.
#[derive(Debug)]
pub struct ShopifySource {
    id: String,
    settings: ShopifySettings,
    http: Result<Arc<HttpClient>, HttpError>,
}

/// Slows down as the leaky bucket fills.
struct ShopifyHeaders {
    leak_per_second: f64,
}

impl RateLimitHeaders for ShopifyHeaders {
    fn pause_after(&self, headers: &HeaderMap) -> Option<Duration> {
        let text = headers
            .get("x-shopify-shop-api-call-limit")?
            .to_str()
            .ok()?;
        let (used, size) = text.split_once('/')?;
        let (used, size) = (
            used.trim().parse::<f64>().ok()?,
            size.trim().parse::<f64>().ok()?,
        );
        // Keep a fifth of the bucket free: wait for what is above 80% to leak out.
        let excess = used - size * 0.8;
        (excess > 0.0).then(|| Duration::from_secs_f64(excess / self.leak_per_second))
    }
}

/// Where a stream stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ShopifyCursor {
    /// `updated_at_min` of the next window (inclusive); `None` before the first window completes.
    since: Option<DateTime<Utc>>,
    /// `updated_at_max` of the window being read.
    until: Option<DateTime<Utc>>,
    /// The next page of that window, as Shopify's `Link` header gave it.
    next_url: Option<String>,
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The URL with `rel="next"` in a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            p.trim()
                .trim_matches(|c| c == ' ')
                .eq_ignore_ascii_case("rel=\"next\"")
        });
        is_next.then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    customers: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    orders: Option<Vec<serde_json::Value>>,
}

impl ShopifySource {
    /// A Shopify source with the id it has in `connectors.toml`.
    pub fn new(id: &str, settings: ShopifySettings) -> Self {
        let auth = Auth::Header {
            name: reqwest::header::HeaderName::from_static("x-shopify-access-token"),
            value: SecretString::from(settings.access_token.expose_secret().to_owned()),
            prefix: "",
        };
        let per_request = Duration::from_secs_f64(1.0 / settings.requests_per_second);
        let options = HttpOptions {
            requests: 1,
            per: per_request,
            // Leave a few calls of the bucket for other apps of the shop.
            burst: settings.bucket_size.saturating_sub(4).max(1),
            ..HttpOptions::default()
        };
        let headers = ShopifyHeaders {
            leak_per_second: settings.requests_per_second,
        };
        let http = HttpClient::new(id, options, auth, Some(Box::new(headers)));
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

    fn first_page_url(
        &self,
        stream: &str,
        since: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
    ) -> Result<url::Url, SourceError> {
        let mut url = url::Url::parse(&format!(
            "{}/admin/api/{}/{stream}.json",
            self.settings.base_url, self.settings.api_version
        ))
        .map_err(|err| SourceError::Mismatch(format!("invalid Shopify url: {err}")))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &PAGE_LIMIT.to_string());
            if stream == "orders" {
                query.append_pair("status", "any");
            }
            if let Some(since) = since {
                query.append_pair("updated_at_min", &timestamp(since));
            }
            query.append_pair("updated_at_max", &timestamp(until));
        }
        Ok(url)
    }

    /// A `Link` URL is followed only on the shop's own origin.
    fn checked_next(&self, next: &str) -> Result<url::Url, SourceError> {
        let url = url::Url::parse(next)
            .map_err(|err| SourceError::Mismatch(format!("unreadable Link url: {err}")))?;
        let origin = url::Url::parse(&self.settings.base_url)
            .map_err(|err| SourceError::Mismatch(err.to_string()))?;
        if url.origin() != origin.origin() {
            return Err(SourceError::Mismatch(format!(
                "Link header points outside the shop: {}",
                url.origin().ascii_serialization()
            )));
        }
        Ok(url)
    }
}

#[async_trait]
impl Source for ShopifySource {
    fn kind(&self) -> &'static str {
        "shopify"
    }

    fn streams(&self) -> Vec<String> {
        self.settings.streams.clone()
    }

    async fn pull(&mut self, stream: &str, cursor: Option<&Cursor>) -> Result<Pull, SourceError> {
        let mut state: ShopifyCursor = cursor
            .and_then(|c| serde_json::from_value(c.position.clone()).ok())
            .unwrap_or(ShopifyCursor {
                since: None,
                until: None,
                next_url: None,
            });
        let until = match state.until {
            Some(until) => until,
            None => {
                let now = Utc::now();
                state.until = Some(now);
                now
            }
        };
        let url = match &state.next_url {
            Some(next) => self.checked_next(next)?,
            None => self.first_page_url(stream, state.since, until)?,
        };
        let response = match self.http()?.send(&HttpRequest::get(url)).await {
            Ok(response) => response,
            Err(HttpError::Status { status: 400, .. }) if state.next_url.is_some() => {
                tracing::warn!(source = %self.id, stream, "Shopify refused the stored page link; reading the window again");
                let restart = ShopifyCursor {
                    next_url: None,
                    ..state
                };
                let batch = SourceBatch {
                    cursors: vec![Cursor {
                        stream: stream.to_owned(),
                        position: serde_json::to_value(&restart).unwrap_or_default(),
                    }],
                    ..SourceBatch::default()
                };
                return Ok(Pull {
                    batch,
                    next: Next::More,
                });
            }
            Err(err) => return Err(err.into()),
        };
        let envelope: Envelope = response.json()?;
        let items = if stream == "orders" {
            envelope.orders
        } else {
            envelope.customers
        }
        .ok_or_else(|| {
            SourceError::Http(HttpError::Decode(format!(
                "the answer has no `{stream}` list"
            )))
        })?;
        let mut batch = SourceBatch::default();
        mapping::map_page(&self.id, stream, &items, &mut batch);
        let (next_state, next) = match next_link(&response.headers) {
            Some(next_url) => (
                ShopifyCursor {
                    next_url: Some(next_url),
                    ..state
                },
                Next::More,
            ),
            None => {
                let overlap = chrono::Duration::from_std(OVERLAP).unwrap_or_default();
                (
                    ShopifyCursor {
                        since: Some(until - overlap),
                        until: None,
                        next_url: None,
                    },
                    Next::Done,
                )
            }
        };
        batch.cursors.push(Cursor {
            stream: stream.to_owned(),
            position: serde_json::to_value(&next_state).unwrap_or_default(),
        });
        Ok(Pull { batch, next })
    }

    async fn check(&self) -> Result<(), SourceError> {
        let url = url::Url::parse(&format!(
            "{}/admin/api/{}/customers.json?limit=1",
            self.settings.base_url, self.settings.api_version
        ))
        .map_err(|err| SourceError::Mismatch(err.to_string()))?;
        self.http()?.send(&HttpRequest::get(url)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
