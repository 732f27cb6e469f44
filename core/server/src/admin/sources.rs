//! `/api/sources`: sources with their cursors and runs, and run now.
//!
//! Sources are the `[sources.<id>]` of `connectors.toml`; an unknown id is 404. Run now queues the source's
//! job with the scheduler (202) and is recorded in the audit log; only `admin` may do it.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use spindle_config::SourceConfig;
use spindle_model::JobId;
use spindle_store::ProfileStore;
use utoipa::ToSchema;

use super::auth::{Access, Caller};
use super::error::{ApiResult, ErrorBody};
use super::syncs::{Queued, RunView, run_now};
use super::{AdminState, Inner, configured};

/// How far a stream has been read.
#[derive(Debug, Serialize, ToSchema)]
pub struct CursorView {
    /// The stream.
    pub stream: String,
    /// Connector-specific position.
    #[schema(value_type = Object)]
    pub position: serde_json::Value,
}

/// A source with its state.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    /// Its id.
    pub id: String,
    /// `csv`, `jsonl`, `hubspot`, `shopify`, ...
    pub kind: &'static str,
    /// Cron expression; absent when it runs on demand only.
    pub schedule: Option<String>,
    /// Time zone of the schedule.
    pub timezone: Option<String>,
    /// Records stored from it.
    pub records: u64,
    /// Its cursors, by stream.
    pub cursors: Vec<CursorView>,
    /// The most recent run.
    pub last_run: Option<RunView>,
}

/// A source with its recent history.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceStatus {
    /// The source.
    #[serde(flatten)]
    pub source: SourceView,
    /// Its recent runs, newest first (at most 20).
    pub recent_runs: Vec<RunView>,
    /// Its most recently quarantined records (at most 20): `{stream, location, reason, ...}`.
    #[schema(value_type = Vec<Object>)]
    pub quarantined: Vec<serde_json::Value>,
}

fn known<'a>(inner: &'a Inner, id: &str) -> ApiResult<&'a SourceConfig> {
    configured(&inner.config.sources, "source", id)
}

async fn view(inner: &Inner, source: &SourceConfig) -> ApiResult<SourceView> {
    let store = inner.store.as_ref();
    Ok(SourceView {
        id: source.id.clone(),
        kind: source.kind(),
        schedule: source.schedule.as_ref().map(|s| s.expression().to_owned()),
        timezone: source.schedule.as_ref().map(|s| s.timezone().to_string()),
        records: store.count_records(Some(&source.id)).await?,
        cursors: store
            .cursors(&source.id)
            .await?
            .into_iter()
            .map(|c| CursorView {
                stream: c.stream,
                position: c.position,
            })
            .collect(),
        last_run: store
            .last_run(&JobId::source(&source.id))
            .await?
            .map(RunView::from),
    })
}

/// Every source with its cursors, record count and last run.
#[utoipa::path(get,
    operation_id = "sources_list", path = "/sources", tag = "sources",
    responses(
        (status = 200, description = "The sources, by id", body = Vec<SourceView>),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn list(
    State(state): State<AdminState>,
    caller: Caller,
) -> ApiResult<Json<Vec<SourceView>>> {
    caller.require(Access::ReadSources)?;
    let inner = state.inner()?;
    let mut out = Vec::new();
    for source in inner.config.sources.values() {
        out.push(view(inner, source).await?);
    }
    Ok(Json(out))
}

/// One source's status: cursors, record count, recent runs and quarantined records.
#[utoipa::path(get,
    operation_id = "sources_get", path = "/sources/{id}", tag = "sources",
    params(("id" = String, Path, description = "Source id")),
    responses(
        (status = 200, description = "The source's status", body = SourceStatus),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such source", body = ErrorBody),
    ))]
pub(super) async fn get(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<SourceStatus>> {
    caller.require(Access::ReadSources)?;
    let Path(id) = id?;
    let inner = state.inner()?;
    let source = view(inner, known(inner, &id)?).await?;
    let recent_runs = inner
        .store
        .runs(Some(&JobId::source(&id)), 20)
        .await?
        .into_iter()
        .map(RunView::from)
        .collect();
    let quarantined = inner
        .store
        .quarantined(Some(&id), 20)
        .await?
        .into_iter()
        .map(|q| {
            let mut entry = serde_json::to_value(&q.record).unwrap_or_default();
            if let Some(object) = entry.as_object_mut() {
                object.insert("id".into(), q.id.into());
                object.insert(
                    "quarantined_at".into(),
                    q.quarantined_at.to_rfc3339().into(),
                );
            }
            entry
        })
        .collect();
    Ok(Json(SourceStatus {
        source,
        recent_runs,
        quarantined,
    }))
}

/// Pulls a source now (queued with the scheduler).
#[utoipa::path(post,
    operation_id = "sources_run", path = "/sources/{id}/run", tag = "sources",
    params(("id" = String, Path, description = "Source id")),
    responses(
        (status = 202, description = "Queued; see the source's runs", body = Queued),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Only admin tokens may run sources", body = ErrorBody),
        (status = 404, description = "No such source", body = ErrorBody),
        (status = 503, description = "The scheduler cannot take it", body = ErrorBody),
    ))]
pub(super) async fn run(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    caller.require(Access::RunSources)?;
    let Path(id) = id?;
    let inner = state.inner()?;
    known(inner, &id)?;
    run_now(inner, &caller, &JobId::source(&id), "source.run", &id).await
}
