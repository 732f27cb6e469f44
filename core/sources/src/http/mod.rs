//! The HTTP client every HTTP connector uses.
//!
//! Contract:
//! - One [`HttpClient`] per source run. Requests go through a rate limiter configured from the vendor's
//!   documented limit, then out over rustls with connect and request timeouts.
//! - Network errors, timeouts, truncated bodies and 5xx answers are retried with exponential backoff and full
//!   jitter; 429 waits for `Retry-After` (seconds or an HTTP date) when the vendor sends it, else backs off.
//!   Other 4xx answers are not retried and come back as [`HttpError::Status`] with the vendor's message.
//! - A [`RateLimitHeaders`] reader lets a connector slow down from the vendor's rate-limit headers before the
//!   vendor says 429.
//! - Credentials come from an [`Auth`]; OAuth access tokens are refreshed before they expire and once more
//!   after a 401.
//! - Each request is traced at DEBUG with method, path, status, attempt and latency; never headers, query
//!   strings or bodies, which may carry credentials.

mod auth;
mod error;

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

pub use auth::{Auth, OAuthRefresh, OAuthState};
pub use error::HttpError;

/// Installs rustls' ring crypto provider once per process; reqwest is built without a default provider.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only when another provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// 429 answers waited out per request before giving up.
const MAX_THROTTLED: usize = 30;

/// Reads a vendor's rate-limit headers and says how long to pause before the next request.
pub trait RateLimitHeaders: Send + Sync {
    /// A pause to take before the next request, from the headers of the last response.
    fn pause_after(&self, headers: &HeaderMap) -> Option<Duration>;
}

/// How requests are paced and retried.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The period of the request budget.
    pub per: Duration,
    /// Most requests sent back to back before pacing starts.
    pub burst: u32,
    /// Timeout of one request, body included.
    pub timeout: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: usize,
    /// First backoff delay.
    pub min_backoff: Duration,
    /// Longest backoff delay.
    pub max_backoff: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            requests: 10,
            per: Duration::from_secs(1),
            burst: 10,
            timeout: Duration::from_secs(30),
            max_attempts: 6,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// A response that was read completely.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code (2xx).
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: bytes::Bytes,
}

impl HttpResponse {
    /// Decodes the body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|err| HttpError::Decode(err.to_string()))
    }
}

/// A request to send: method, absolute URL, optional JSON or form body.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub url: url::Url,
    /// JSON body.
    pub json: Option<serde_json::Value>,
}

impl HttpRequest {
    /// A GET of `url`.
    pub fn get(url: url::Url) -> Self {
        Self {
            method: Method::GET,
            url,
            json: None,
        }
    }

    /// A POST of a JSON body to `url`.
    pub fn post_json(url: url::Url, body: serde_json::Value) -> Self {
        Self {
            method: Method::POST,
            url,
            json: Some(body),
        }
    }
}

/// The shared HTTP client of a source.
pub struct HttpClient {
    client: reqwest::Client,
    limiter: DefaultDirectRateLimiter,
    auth: Auth,
    headers_reader: Option<Box<dyn RateLimitHeaders>>,
    not_before: Mutex<Option<Instant>>,
    options: HttpOptions,
    source: String,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("source", &self.source)
            .field("options", &self.options)
            .finish()
    }
}

impl HttpClient {
    /// A client for `source` with the given pacing, credentials and header reader.
    pub fn new(
        source: &str,
        options: HttpOptions,
        auth: Auth,
        headers_reader: Option<Box<dyn RateLimitHeaders>>,
    ) -> Result<Arc<Self>, HttpError> {
        install_tls_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("spindle/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| HttpError::Setup(err.to_string()))?;
        let per_request = options.per / options.requests.max(1);
        let quota = Quota::with_period(per_request.max(Duration::from_micros(1)))
            .ok_or_else(|| HttpError::Setup("rate limit period must be positive".into()))?
            .allow_burst(NonZeroU32::new(options.burst.max(1)).unwrap_or(NonZeroU32::MIN));
        Ok(Arc::new(Self {
            client,
            limiter: RateLimiter::direct(quota),
            auth,
            headers_reader,
            not_before: Mutex::new(None),
            options,
            source: source.to_owned(),
        }))
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::new()
            .with_jitter()
            .with_min_delay(self.options.min_backoff)
            .with_max_delay(self.options.max_backoff)
            .with_max_times(self.options.max_attempts.saturating_sub(1))
            .build()
    }

    async fn pace(&self) {
        let wait = self.not_before.lock().ok().and_then(|mut slot| slot.take());
        if let Some(until) = wait {
            let now = Instant::now();
            if until > now {
                tokio::time::sleep(until - now).await;
            }
        }
        self.limiter.until_ready().await;
    }

    /// Sends `request`, retrying as the module doc says, and returns the complete 2xx response.
    pub async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let mut delays = self.backoff();
        let mut attempt = 0usize;
        let mut rate_limited = 0usize;
        let mut refreshed_after_401 = false;
        let path = request.url.path().to_owned();
        loop {
            attempt += 1;
            self.pace().await;
            let started = Instant::now();
            let outcome = self.attempt(request).await;
            let latency_ms = started.elapsed().as_millis() as u64;
            let retry_in = match outcome {
                Attempt::Done(response) => {
                    tracing::debug!(source = %self.source, method = %request.method, path = %path, status = response.status.as_u16(), attempt, latency_ms, "http request");
                    if let Some(pause) = self
                        .headers_reader
                        .as_ref()
                        .and_then(|r| r.pause_after(&response.headers))
                        && let Ok(mut slot) = self.not_before.lock()
                    {
                        *slot = Some(Instant::now() + pause);
                    }
                    return Ok(response);
                }
                Attempt::Fatal(err) => {
                    tracing::debug!(source = %self.source, method = %request.method, path = %path, attempt, latency_ms, error = %err, "http request failed");
                    return Err(err);
                }
                Attempt::Unauthorized(err) => {
                    tracing::debug!(source = %self.source, method = %request.method, path = %path, status = 401, attempt, latency_ms, "http request unauthorized");
                    if refreshed_after_401 || !self.auth.can_refresh() {
                        return Err(err);
                    }
                    refreshed_after_401 = true;
                    self.auth.invalidate();
                    Some(Duration::ZERO)
                }
                Attempt::Retry {
                    error,
                    after,
                    throttled,
                } => {
                    tracing::debug!(source = %self.source, method = %request.method, path = %path, attempt, latency_ms, error = %error, "http request will be retried");
                    // Being throttled is the vendor pacing us, not a failure: it has a budget of its own.
                    let next = if throttled && rate_limited < MAX_THROTTLED {
                        rate_limited += 1;
                        let doubling = 2u32.saturating_pow(rate_limited.min(6) as u32);
                        let backoff =
                            (self.options.min_backoff * doubling).min(self.options.max_backoff);
                        Some(after.unwrap_or(backoff))
                    } else {
                        delays.next().map(|backoff| after.unwrap_or(backoff))
                    };
                    match next {
                        Some(delay) => Some(delay),
                        None => {
                            return Err(HttpError::RetriesExhausted {
                                attempts: attempt,
                                last: error.to_string(),
                            });
                        }
                    }
                }
            };
            if let Some(delay) = retry_in {
                if !delay.is_zero() {
                    tracing::info!(source = %self.source, path = %path, delay_ms = delay.as_millis() as u64, attempt, "retrying");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }

    async fn attempt(&self, request: &HttpRequest) -> Attempt {
        let token = match self.auth.header(&self.client).await {
            Ok(token) => token,
            Err(err) => return Attempt::Fatal(err),
        };
        let mut builder = self
            .client
            .request(request.method.clone(), request.url.clone());
        if let Some((name, value)) = token {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.json {
            builder = builder.json(body);
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(err) => {
                return Attempt::Retry {
                    error: HttpError::Network(redact(&err)),
                    after: None,
                    throttled: false,
                };
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) => {
                return Attempt::Retry {
                    error: HttpError::Network(format!("incomplete body: {}", redact(&err))),
                    after: None,
                    throttled: false,
                };
            }
        };
        if status.is_success() {
            return Attempt::Done(HttpResponse {
                status,
                headers,
                body,
            });
        }
        let error = HttpError::Status {
            status: status.as_u16(),
            method: request.method.to_string(),
            path: request.url.path().to_owned(),
            message: error::vendor_message(&body),
        };
        match status {
            StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                error,
                after: retry_after(&headers),
                throttled: true,
            },
            StatusCode::UNAUTHORIZED => Attempt::Unauthorized(error),
            s if s.is_server_error() => Attempt::Retry {
                error,
                after: None,
                throttled: false,
            },
            _ => Attempt::Fatal(error),
        }
    }
}

enum Attempt {
    Done(HttpResponse),
    Retry {
        error: HttpError,
        after: Option<Duration>,
        throttled: bool,
    },
    Unauthorized(HttpError),
    Fatal(HttpError),
}

/// A reqwest error without its URL (query strings may carry credentials).
fn redact(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "body could not be read"
    } else {
        "request failed"
    };
    let mut cause = std::error::Error::source(err);
    let mut detail = String::new();
    while let Some(inner) = cause {
        detail = inner.to_string();
        cause = inner.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// `Retry-After` as seconds (integer or decimal, as Shopify sends) or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(3600.0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests;
