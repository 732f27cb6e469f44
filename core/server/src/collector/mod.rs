//! The Segment-compatible event collector (`/v1/*`).
//!
//! Routes (all `POST`): `/v1/identify`, `/v1/track`, `/v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias`,
//! `/v1/batch` (and its legacy name `/v1/import`), and the browser short paths `/v1/i`, `/v1/t`, `/v1/p`,
//! `/v1/s`, `/v1/g`, `/v1/a`, `/v1/b`. Every path accepts every documented way in: JSON or `text/plain`
//! bodies, gzip, the write key as HTTP Basic user name (password ignored) or as `writeKey` in the body.
//!
//! Contract:
//! - **Authentication.** A request's write key names the source its records are stored under. An
//!   `Authorization` header, when present, must be `Basic` with a known key (else 401, whatever the body
//!   says); without it the body's `writeKey` must be a known key. Keys are compared by SHA-256 digest and are
//!   never logged.
//! - **Acknowledgement means durable.** A `200` is sent only after the transaction holding the request's
//!   records committed (group commit, see [`writer`]); on a store failure the answer is `503` and nothing of
//!   the request was stored, so a client retry loses nothing and (thanks to `messageId` de-duplication)
//!   repeats nothing.
//! - **Batches are not all-or-nothing** (as with Segment): valid messages of a batch are stored even when
//!   others are refused. The answer is `200` with
//!   `{"success": true, "accepted": N, "duplicates": D, "rejected": [{"index", "code", "message"}]}`.
//!   A single call whose message is refused gets `400 {"code", "message"}` instead (Segment answers 200 and
//!   drops it silently; a clear 400 tells the developer, and client libraries do not retry a 400).
//! - **De-duplication.** A message whose `messageId` the source sent within `[server] dedupe_window` is
//!   acknowledged (counted in `duplicates`) and not stored again.
//! - Whole-request refusals and their statuses are listed in [`error`]; message refusals and the mapping
//!   onto Spindle's records in [`message`]; body limits in [`body`].

pub mod body;
pub mod error;
pub mod message;
pub mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use http_body_util::BodyExt;
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};
use spindle_config::ServerConfig;
use spindle_store::{CollectedOutcome, CollectedRecord, SqlStore};
use tower_http::cors::{AllowOrigin, CorsLayer};

use self::body::{Endpoint, MessageType};
use self::error::{CollectorError, Rejection};
use self::writer::{Writer, WriterHandle};

/// Write keys by SHA-256 digest, each naming a source.
#[derive(Clone, Default)]
pub struct WriteKeys {
    by_digest: HashMap<[u8; 32], String>,
}

impl std::fmt::Debug for WriteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sources: Vec<&String> = self.by_digest.values().collect();
        sources.sort();
        f.debug_struct("WriteKeys")
            .field("sources", &sources)
            .finish()
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl WriteKeys {
    /// The keys of `[server] write_keys`.
    pub fn from_config(server: &ServerConfig) -> Self {
        Self {
            by_digest: server
                .write_keys
                .iter()
                .map(|k| (digest(k.key.expose_secret()), k.source.clone()))
                .collect(),
        }
    }

    /// The source a key belongs to.
    pub fn source_of(&self, key: &str) -> Option<&str> {
        self.by_digest.get(&digest(key)).map(String::as_str)
    }
}

/// What the collector's handlers share.
#[derive(Debug, Clone, Default)]
pub struct CollectorState {
    keys: WriteKeys,
    cors_origins: Vec<String>,
    writer: Option<WriterHandle>,
}

impl CollectorState {
    /// Starts the collector's writer on `store` with the `[server]` settings; the [`Writer`] tells when
    /// records were stored and lets the caller wait for the queue to drain at shutdown.
    pub fn start(store: Arc<SqlStore>, server: &ServerConfig) -> (Self, Writer) {
        let (handle, writer) = writer::start(store, server.dedupe_window);
        (
            Self {
                keys: WriteKeys::from_config(server),
                cors_origins: server.cors_origins.clone(),
                writer: Some(handle),
            },
            writer,
        )
    }

    /// Starts a collector with explicit keys and window (tests and benchmarks).
    pub fn with_keys(
        store: Arc<SqlStore>,
        keys: WriteKeys,
        cors_origins: Vec<String>,
        window: Duration,
    ) -> (Self, Writer) {
        let (handle, writer) = writer::start(store, window);
        (
            Self {
                keys,
                cors_origins,
                writer: Some(handle),
            },
            writer,
        )
    }
}

impl WriteKeys {
    /// Keys from `(source, key)` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            by_digest: pairs
                .into_iter()
                .map(|(source, key)| (digest(key), source.to_owned()))
                .collect(),
        }
    }
}

/// The paths of each endpoint.
const ROUTES: &[(&str, Endpoint)] = &[
    ("/v1/identify", Endpoint::Single(MessageType::Identify)),
    ("/v1/i", Endpoint::Single(MessageType::Identify)),
    ("/v1/track", Endpoint::Single(MessageType::Track)),
    ("/v1/t", Endpoint::Single(MessageType::Track)),
    ("/v1/page", Endpoint::Single(MessageType::Page)),
    ("/v1/p", Endpoint::Single(MessageType::Page)),
    ("/v1/screen", Endpoint::Single(MessageType::Screen)),
    ("/v1/s", Endpoint::Single(MessageType::Screen)),
    ("/v1/group", Endpoint::Single(MessageType::Group)),
    ("/v1/g", Endpoint::Single(MessageType::Group)),
    ("/v1/alias", Endpoint::Single(MessageType::Alias)),
    ("/v1/a", Endpoint::Single(MessageType::Alias)),
    ("/v1/batch", Endpoint::Batch),
    ("/v1/b", Endpoint::Batch),
    ("/v1/import", Endpoint::Batch),
];

/// CORS for browsers: the configured origins may `POST` with the headers the libraries send.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::CONTENT_ENCODING,
            ])
            .max_age(Duration::from_secs(86_400)),
    )
}

/// The collector's routes.
pub fn router(state: CollectorState) -> Router {
    let cors = cors(&state.cors_origins);
    let mut router = Router::new();
    for &(path, endpoint) in ROUTES {
        router = router.route(
            path,
            post(
                move |State(state): State<CollectorState>, headers: HeaderMap, body: Body| async move {
                    handle(&state, endpoint, &headers, body).await
                },
            ),
        );
    }
    let router = router.with_state(state);
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// The answer to an accepted request.
#[derive(Debug, Serialize)]
struct Accepted {
    success: bool,
    accepted: usize,
    duplicates: usize,
    rejected: Vec<Rejection>,
}

/// The write key of the `Authorization` header: `None` without the header.
fn header_key(headers: &HeaderMap) -> Result<Option<String>, CollectorError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        CollectorError::Unauthorized(
            "malformed Authorization header: send `Basic base64(<write key>:)`".into(),
        )
    };
    let text = value.to_str().map_err(|_| malformed())?.trim();
    let (scheme, credentials) = text.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(CollectorError::Unauthorized(
            "the collector takes the write key as the Basic user name (`Basic base64(<write key>:)`)"
                .into(),
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
    Ok(Some(user.to_owned()))
}

fn unknown_key() -> CollectorError {
    CollectorError::Unauthorized("unknown write key".into())
}

async fn handle(
    state: &CollectorState,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    match collect(state, endpoint, headers, body).await {
        Ok(accepted) => {
            if endpoint == Endpoint::Batch {
                axum::Json(accepted).into_response()
            } else {
                axum::Json(serde_json::json!({
                    "success": true,
                    "duplicate": accepted.duplicates > 0,
                }))
                .into_response()
            }
        }
        Err(err) => {
            // A refused message was counted with its own reason already.
            if !matches!(err, CollectorError::InvalidMessage(_)) {
                metrics::counter!("spindle_collector_rejected_total", "reason" => err.code())
                    .increment(1);
            }
            tracing::debug!(endpoint = endpoint.label(), code = err.code(), error = %err, "collector request refused");
            err.into_response()
        }
    }
}

async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, CollectorError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            Err(CollectorError::TooLarge { limit })
        }
        Err(err) => Err(CollectorError::Body(err.to_string())),
    }
}

async fn collect(
    state: &CollectorState,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, CollectorError> {
    // Milliseconds: the precision of Segment's timestamps and of the store.
    let received_at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3);
    // A wrong Authorization header is refused before the body is read.
    let header_source = match header_key(headers)? {
        Some(key) => Some(
            state
                .keys
                .source_of(&key)
                .ok_or_else(unknown_key)?
                .to_owned(),
        ),
        None => None,
    };
    body::check_content_type(headers)?;
    let gzip = body::is_gzip(headers)?;
    let limit = endpoint.limit();
    // A compressed body is read up to the same limit plus room for gzip's framing.
    let raw = read_body(body, if gzip { limit + 1024 } else { limit }).await?;
    let text = if gzip {
        std::borrow::Cow::Owned(body::gunzip(&raw, limit)?)
    } else {
        std::borrow::Cow::Borrowed(&raw[..])
    };
    let envelope = body::parse(endpoint, &text)?;
    let source = match header_source {
        Some(source) => source,
        None => {
            let key = envelope.write_key.as_deref().ok_or_else(|| {
                CollectorError::Unauthorized(
                    "no write key: send it as the Basic user name or as `writeKey` in the body"
                        .into(),
                )
            })?;
            state
                .keys
                .source_of(key)
                .ok_or_else(unknown_key)?
                .to_owned()
        }
    };

    let mut rejected = Vec::new();
    let mut records = Vec::with_capacity(envelope.messages.len());
    for (index, message) in envelope.messages.into_iter().enumerate() {
        let built = message.and_then(|message| {
            let record =
                message::to_record(endpoint, message, envelope.sent_at.as_ref(), received_at)
                    .map_err(|refusal| Rejection {
                        index,
                        code: refusal.code,
                        message: refusal.message,
                    })?;
            // Encoded here, concurrently with other requests, so the group commit only writes.
            CollectedRecord::new(source.as_str(), record).map_err(|err| Rejection {
                index,
                code: "invalid_message",
                message: format!("the message cannot be encoded: {err}"),
            })
        });
        match built {
            Ok(record) => records.push(record),
            Err(rejection) => {
                metrics::counter!("spindle_collector_rejected_total", "reason" => rejection.code)
                    .increment(1);
                rejected.push(rejection);
            }
        }
    }
    if let Endpoint::Single(_) = endpoint
        && let Some(rejection) = rejected.pop()
    {
        return Err(CollectorError::InvalidMessage(rejection));
    }
    metrics::counter!("spindle_collector_received_total", "source" => source.clone())
        .increment((records.len() + rejected.len()) as u64);
    let accepted_count = records.len();
    let mut duplicates = 0;
    if !records.is_empty() {
        let writer = state.writer.as_ref().ok_or(CollectorError::Unavailable)?;
        let outcomes = writer
            .store(records)
            .await
            .map_err(|_| CollectorError::Unavailable)?;
        duplicates = outcomes
            .iter()
            .filter(|o| **o == CollectedOutcome::Duplicate)
            .count();
        metrics::counter!("spindle_collector_stored_total", "source" => source.clone())
            .increment((accepted_count - duplicates) as u64);
        if duplicates > 0 {
            metrics::counter!("spindle_collector_duplicates_total", "source" => source.clone())
                .increment(duplicates as u64);
        }
    }
    Ok(Accepted {
        success: true,
        accepted: accepted_count - duplicates,
        duplicates,
        rejected,
    })
}
