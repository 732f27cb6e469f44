//! Operations endpoints (`/healthz`, `/readyz`, `/metrics`) and the instrumentation every route shares.
//!
//! Contract:
//! - `GET /healthz` needs no credentials and answers `200 {"status":"ok"}` while the process serves HTTP.
//! - `GET /readyz` and `GET /metrics` need `Authorization: Bearer <token>` with any `[server] admin_tokens`
//!   token (any role); otherwise 401 `{"code":"unauthorized",...}`. With no admin token configured they are
//!   closed.
//! - `/readyz` is `200 {"status":"ready","schema_version":N}` when the store answers and its schema is at
//!   [`spindle_store::latest_version`], else `503 {"status":"not_ready","reason":...}`.
//! - `/metrics` is the Prometheus text format: the process's counters and histograms (see the README's
//!   list) plus gauges read from the store at each scrape: `spindle_profiles`,
//!   `spindle_records{source}`, `spindle_segment_members{segment}`.
//! - [`instrument`] gives every route a request id (`x-request-id`: the client's, or a new UUID; echoed in
//!   the response and recorded on the request's tracing span) and records
//!   `spindle_http_request_duration_seconds{route,method,status}`.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use secrecy::ExposeSecret;
use serde_json::json;
use sha2::{Digest, Sha256};
use spindle_config::ServerConfig;
use spindle_store::SqlStore;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// What the operations endpoints share.
#[derive(Debug, Clone, Default)]
pub struct OpsState {
    store: Option<Arc<SqlStore>>,
    tokens: Arc<HashSet<[u8; 32]>>,
    metrics: Option<PrometheusHandle>,
}

impl OpsState {
    /// Operations endpoints over `store`, opened to the `[server] admin_tokens`.
    pub fn new(store: Arc<SqlStore>, server: &ServerConfig) -> Self {
        Self {
            store: Some(store),
            tokens: Arc::new(
                server
                    .admin_tokens
                    .iter()
                    .map(|t| digest(t.token.expose_secret()))
                    .collect(),
            ),
            metrics: Some(install_metrics()),
        }
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The process's Prometheus recorder, installed on first use.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0, 60.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("spindle_collector_commit_records".into()),
                        &[1.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0, 20_000.0],
                    )
                });
            match builder {
                Ok(builder) => {
                    let recorder = builder.build_recorder();
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!(
                            "another metrics recorder is installed; /metrics shows only store gauges"
                        );
                    }
                    handle
                }
                Err(err) => {
                    tracing::warn!(error = %err, "metrics buckets refused; using defaults");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// The operations routes.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

/// Adds request ids, tracing spans and latency histograms to every route of `router`.
pub fn instrument(router: Router) -> Router {
    router
        .layer(axum::middleware::from_fn(record_latency))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!(
                    "http",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %id,
                )
            }),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

async fn record_latency(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        "spindle_http_request_duration_seconds",
        "route" => route,
        "method" => method,
        "status" => response.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// True when the request carries an `[server] admin_tokens` token as `Bearer`.
fn authorized(state: &OpsState, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, token)| state.tokens.contains(&digest(token.trim())))
}

fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({
            "code": "unauthorized",
            "message": "send `Authorization: Bearer <token>` with an [server] admin_tokens token",
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<OpsState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "reason": reason})),
        )
            .into_response()
    };
    let Some(store) = &state.store else {
        return not_ready("no store".into());
    };
    match store.schema_version().await {
        Ok(version) if version == spindle_store::latest_version() => {
            axum::Json(json!({"status": "ready", "schema_version": version})).into_response()
        }
        Ok(version) => not_ready(format!(
            "the store's schema is at version {version}, this build needs {}",
            spindle_store::latest_version()
        )),
        Err(err) => not_ready(format!("the store does not answer: {err}")),
    }
}

async fn metrics_text(State(state): State<OpsState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    if let Some(store) = &state.store {
        match store.store_counts().await {
            Ok(counts) => {
                metrics::gauge!("spindle_profiles").set(counts.profiles as f64);
                for (source, n) in counts.records_by_source {
                    metrics::gauge!("spindle_records", "source" => source).set(n as f64);
                }
                for (segment, n) in counts.segment_sizes {
                    metrics::gauge!("spindle_segment_members", "segment" => segment).set(n as f64);
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot read store counts for /metrics"),
        }
    }
    let text = state
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
