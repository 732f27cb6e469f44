//! `/api/segments`: configured and API-created segments side by side, their changes and previews.
//!
//! Contract:
//! - Segments from `connectors.toml` have origin `config` and are read-only here (409 on update or delete).
//!   Segments created through the API have origin `api` and live in the store ([`AdminStore`]). Both share
//!   one id namespace: creating an id that exists in either is 409. Should a configured segment later take
//!   the id of an API one, the configured one wins ([`segment_definitions`]).
//! - An expression is accepted only when it parses, every `in_segment()` names an existing segment, and
//!   segments do not refer to each other in a cycle; otherwise 422 with the line and column when the
//!   problem has a place.
//! - A segment other segments refer to cannot be deleted (409).
//! - Preview evaluates the expression over every profile now, as `spindle segments preview` does, and
//!   returns the count and a sample; it writes nothing.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use spindle_config::{Config, SegmentConfig};
use spindle_identity::profile::ProfileDocument;
use spindle_segments::Expr;
use spindle_store::{
    AdminStore, ApiSegment, ApiSegmentWrite, IdentityStore, ProfileChangeStore, StoreResult,
};
use spindle_sync::SyncError;
use spindle_sync::live::SharedProfiles;
use spindle_sync::membership::Segments;
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::auth::{Access, Caller};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::profiles::{ProfileSummary, summary};

/// Who owns a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SegmentOrigin {
    /// Written in `connectors.toml`; change it there.
    Config,
    /// Created through the admin API; kept in the store.
    Api,
}

/// Every segment, configured ones first (by id) then API-created ones (by id), as
/// `(id, where-expression, origin)`. An API segment whose id a configured one has taken is left out.
///
/// Membership evaluation must cover this whole list.
pub async fn segment_definitions<S: AdminStore + ?Sized>(
    config: &Config,
    store: &S,
) -> StoreResult<Vec<(String, String, SegmentOrigin)>> {
    let mut out: Vec<(String, String, SegmentOrigin)> = config
        .segments
        .values()
        .map(|s| (s.id.clone(), s.expression.clone(), SegmentOrigin::Config))
        .collect();
    for segment in store.api_segments().await? {
        if !config.segments.contains_key(&segment.id) {
            out.push((segment.id, segment.expression, SegmentOrigin::Api));
        }
    }
    Ok(out)
}

/// `config` with its segments replaced by `definitions`, so that [`Segments::compile`] orders and checks
/// them all together.
fn with_segments(config: &Config, definitions: &[(String, String, SegmentOrigin)]) -> Config {
    let mut config = config.clone();
    config.segments = definitions
        .iter()
        .map(|(id, expression, _)| {
            let description = config.segments.get(id).and_then(|s| s.description.clone());
            (
                id.clone(),
                SegmentConfig {
                    id: id.clone(),
                    expression: expression.clone(),
                    description,
                },
            )
        })
        .collect();
    config
}

/// Configured and API-created segments ([`segment_definitions`]), parsed and ordered for evaluation: what
/// [`spindle_sync::membership::evaluate_all`] and `evaluate_profiles` should be given so that API segments
/// get memberships too.
pub async fn compile_all<S: AdminStore + ?Sized>(
    config: &Config,
    store: &S,
) -> Result<Segments, spindle_sync::SyncError> {
    let definitions = segment_definitions(config, store).await?;
    Segments::compile(&with_segments(config, &definitions))
}

/// A segment as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentView {
    /// Its id.
    pub id: String,
    /// The segment expression.
    #[serde(rename = "where")]
    pub expression: String,
    /// What it is for.
    pub description: Option<String>,
    /// `config` (read-only here) or `api`.
    pub origin: SegmentOrigin,
    /// Members recorded at the last evaluation.
    pub members: u64,
    /// For API segments: when it was created.
    pub created_at: Option<DateTime<Utc>>,
    /// For API segments: who created it.
    pub created_by: Option<String>,
    /// For API segments: when it last changed.
    pub updated_at: Option<DateTime<Utc>>,
    /// For API segments: who changed it last.
    pub updated_by: Option<String>,
}

/// A segment to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSegment {
    /// Lowercase letters, digits, `-` and `_`, starting with a letter; at most 64 characters.
    pub id: String,
    /// The segment expression, e.g. `total_spent > 500 and consent.email`.
    #[serde(rename = "where")]
    pub expression: String,
    /// What it is for.
    pub description: Option<String>,
}

/// A segment's new content.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentUpdate {
    /// The segment expression.
    #[serde(rename = "where")]
    pub expression: String,
    /// What it is for (absent clears it).
    pub description: Option<String>,
}

/// An expression to preview.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The segment expression.
    #[serde(rename = "where")]
    pub expression: String,
    /// Members to return (default 10, at most 100).
    pub sample: Option<usize>,
}

/// `?sample=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SampleQuery {
    /// Members to return (default 10, at most 100).
    pub sample: Option<usize>,
}

/// How many profiles match, and some of them.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewResult {
    /// The expression evaluated.
    #[serde(rename = "where")]
    pub expression: String,
    /// Profiles that match now.
    pub count: u64,
    /// The first matching profiles, by id.
    pub sample: Vec<ProfileSummary>,
    /// How long the evaluation took.
    pub took_ms: u64,
}

fn view_of_config(segment: &SegmentConfig, members: u64) -> SegmentView {
    SegmentView {
        id: segment.id.clone(),
        expression: segment.expression.clone(),
        description: segment.description.clone(),
        origin: SegmentOrigin::Config,
        members,
        created_at: None,
        created_by: None,
        updated_at: None,
        updated_by: None,
    }
}

fn view_of_api(segment: ApiSegment, members: u64) -> SegmentView {
    SegmentView {
        id: segment.id,
        expression: segment.expression,
        description: segment.description,
        origin: SegmentOrigin::Api,
        members,
        created_at: Some(segment.created_at),
        created_by: Some(segment.created_by),
        updated_at: Some(segment.updated_at),
        updated_by: Some(segment.updated_by),
    }
}

async fn members(state: &AdminState, id: &str) -> ApiResult<u64> {
    let sizes = state.inner()?.store.segment_sizes().await?;
    Ok(sizes.get(id).copied().unwrap_or(0))
}

/// The same rule as ids in `connectors.toml`.
fn check_id(id: &str) -> ApiResult<()> {
    let mut chars = id.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if starts_well && rest_ok && id.len() <= 64 {
        return Ok(());
    }
    Err(ApiError::BadRequest(format!(
        "invalid segment id `{id}`: ids are lowercase letters, digits, `-` and `_`, starting with a letter, at most 64 characters"
    )))
}

/// Checks `text` as the expression of segment `id` among all others (see the module contract).
async fn validate(state: &AdminState, id: &str, text: &str) -> ApiResult<Expr> {
    let inner = state.inner()?;
    let expr = spindle_segments::parse(text).map_err(|e| ApiError::expression(text, &e))?;
    let mut definitions = segment_definitions(&inner.config, inner.store.as_ref()).await?;
    definitions.retain(|(other, _, _)| other != id);
    let known: BTreeSet<String> = definitions
        .iter()
        .map(|(id, _, _)| id.clone())
        .chain([id.to_owned()])
        .collect();
    let missing: Vec<String> = spindle_segments::segment_refs(&expr)
        .into_iter()
        .filter(|r| !known.contains(r))
        .collect();
    if !missing.is_empty() {
        let names = spindle_segments::Known {
            segments: known,
            ..Default::default()
        };
        let located = spindle_segments::check(&expr, &names)
            .into_iter()
            .find(|e| {
                missing
                    .iter()
                    .any(|m| e.message.contains(&format!("`{m}`")))
            });
        return Err(match located {
            Some(error) => ApiError::expression(text, &error),
            None => ApiError::InvalidExpression {
                message: format!(
                    "in_segment() names segments that do not exist: {}",
                    missing.join(", ")
                ),
                location: None,
            },
        });
    }
    definitions.push((id.to_owned(), text.to_owned(), SegmentOrigin::Api));
    if let Err(err) = Segments::compile(&with_segments(&inner.config, &definitions)) {
        return Err(ApiError::InvalidExpression {
            message: err.to_string(),
            location: None,
        });
    }
    Ok(expr)
}

fn config_owned(id: &str) -> ApiError {
    ApiError::Conflict(format!(
        "segment `{id}` is defined in connectors.toml ([segments.{id}]); change it there, not through the API"
    ))
}

/// Every segment, configured and API-created.
#[utoipa::path(get,
    operation_id = "segments_list", path = "/segments", tag = "segments",
    responses(
        (status = 200, description = "Configured segments then API-created ones", body = Vec<SegmentView>),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn list(
    State(state): State<AdminState>,
    caller: Caller,
) -> ApiResult<Json<Vec<SegmentView>>> {
    caller.require(Access::ReadSegments)?;
    let inner = state.inner()?;
    let sizes = inner.store.segment_sizes().await?;
    let size = |id: &str| sizes.get(id).copied().unwrap_or(0);
    let mut out: Vec<SegmentView> = inner
        .config
        .segments
        .values()
        .map(|segment| view_of_config(segment, size(&segment.id)))
        .collect();
    for segment in inner.store.api_segments().await? {
        if !inner.config.segments.contains_key(&segment.id) {
            let count = size(&segment.id);
            out.push(view_of_api(segment, count));
        }
    }
    Ok(Json(out))
}

/// One segment.
#[utoipa::path(get,
    operation_id = "segments_get", path = "/segments/{id}", tag = "segments",
    params(("id" = String, Path, description = "Segment id")),
    responses(
        (status = 200, description = "The segment", body = SegmentView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such segment", body = ErrorBody),
    ))]
pub(super) async fn get(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<SegmentView>> {
    caller.require(Access::ReadSegments)?;
    let Path(id) = id?;
    let inner = state.inner()?;
    if let Some(segment) = inner.config.segments.get(&id) {
        return Ok(Json(view_of_config(segment, members(&state, &id).await?)));
    }
    let segment = inner
        .store
        .api_segment(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("there is no segment `{id}`")))?;
    let count = members(&state, &id).await?;
    Ok(Json(view_of_api(segment, count)))
}

/// Creates a segment.
#[utoipa::path(post,
    operation_id = "segments_create", path = "/segments", tag = "segments", request_body = NewSegment,
    responses(
        (status = 201, description = "Created", body = SegmentView),
        (status = 400, description = "Malformed body or id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not change segments", body = ErrorBody),
        (status = 409, description = "A segment with that id exists", body = ErrorBody),
        (status = 422, description = "The expression is invalid; `details` says where", body = ErrorBody),
    ))]
pub(super) async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    body: Result<Json<NewSegment>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<SegmentView>)> {
    caller.require(Access::WriteSegments)?;
    let Json(body) = body?;
    check_id(&body.id)?;
    let inner = state.inner()?;
    if inner.config.segments.contains_key(&body.id) {
        return Err(config_owned(&body.id));
    }
    validate(&state, &body.id, &body.expression).await?;
    let entry = caller.audit(
        "segment.create",
        &body.id,
        serde_json::json!({ "where": body.expression, "description": body.description }),
    );
    let write = ApiSegmentWrite {
        id: body.id.clone(),
        expression: body.expression,
        description: body.description,
        actor: caller.actor(),
    };
    let created = inner
        .store
        .create_api_segment(write, entry)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("segment `{}` exists already", body.id)))?;
    tracing::info!(segment = %created.id, token = %caller.name, "admin API: segment created");
    Ok((StatusCode::CREATED, Json(view_of_api(created, 0))))
}

/// Replaces an API segment's expression and description.
#[utoipa::path(put,
    operation_id = "segments_update", path = "/segments/{id}", tag = "segments", request_body = SegmentUpdate,
    params(("id" = String, Path, description = "Segment id")),
    responses(
        (status = 200, description = "Updated", body = SegmentView),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not change segments", body = ErrorBody),
        (status = 404, description = "No such segment", body = ErrorBody),
        (status = 409, description = "The segment is defined in connectors.toml", body = ErrorBody),
        (status = 422, description = "The expression is invalid; `details` says where", body = ErrorBody),
    ))]
pub(super) async fn update(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<SegmentUpdate>, JsonRejection>,
) -> ApiResult<Json<SegmentView>> {
    caller.require(Access::WriteSegments)?;
    let Path(id) = id?;
    let Json(body) = body?;
    let inner = state.inner()?;
    if inner.config.segments.contains_key(&id) {
        return Err(config_owned(&id));
    }
    if inner.store.api_segment(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("there is no segment `{id}`")));
    }
    validate(&state, &id, &body.expression).await?;
    let entry = caller.audit(
        "segment.update",
        &id,
        serde_json::json!({ "where": body.expression, "description": body.description }),
    );
    let write = ApiSegmentWrite {
        id: id.clone(),
        expression: body.expression,
        description: body.description,
        actor: caller.actor(),
    };
    let updated = inner
        .store
        .update_api_segment(write, entry)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("there is no segment `{id}`")))?;
    tracing::info!(segment = %id, token = %caller.name, "admin API: segment updated");
    let count = members(&state, &id).await?;
    Ok(Json(view_of_api(updated, count)))
}

/// Deletes an API segment and its memberships.
#[utoipa::path(delete,
    operation_id = "segments_delete", path = "/segments/{id}", tag = "segments",
    params(("id" = String, Path, description = "Segment id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not change segments", body = ErrorBody),
        (status = 404, description = "No such segment", body = ErrorBody),
        (status = 409, description = "The segment is defined in connectors.toml, or other segments use it", body = ErrorBody),
    ))]
pub(super) async fn delete(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    caller.require(Access::WriteSegments)?;
    let Path(id) = id?;
    let inner = state.inner()?;
    if inner.config.segments.contains_key(&id) {
        return Err(config_owned(&id));
    }
    let users: Vec<String> = segment_definitions(&inner.config, inner.store.as_ref())
        .await?
        .into_iter()
        .filter(|(other, text, _)| {
            other != &id
                && spindle_segments::parse(text)
                    .is_ok_and(|e| spindle_segments::segment_refs(&e).contains(&id))
        })
        .map(|(other, _, _)| other)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::Conflict(format!(
            "segment `{id}` is used by in_segment() in: {}; change those first",
            users.join(", ")
        )));
    }
    let entry = caller.audit("segment.delete", &id, serde_json::json!({}));
    if !inner.store.delete_api_segment(&id, entry).await? {
        return Err(ApiError::NotFound(format!("there is no segment `{id}`")));
    }
    tracing::info!(segment = %id, token = %caller.name, "admin API: segment deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Counts and samples the profiles that match a segment now.
#[utoipa::path(get,
    operation_id = "segments_preview_segment", path = "/segments/{id}/preview", tag = "segments",
    params(("id" = String, Path, description = "Segment id"), SampleQuery),
    responses(
        (status = 200, description = "Count and sample", body = PreviewResult),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such segment", body = ErrorBody),
    ))]
pub(super) async fn preview_segment(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<SampleQuery>, QueryRejection>,
) -> ApiResult<Json<PreviewResult>> {
    caller.require(Access::ReadSegments)?;
    let Path(id) = id?;
    let Query(query) = query?;
    let inner = state.inner()?;
    let text = match inner.config.segments.get(&id) {
        Some(segment) => segment.expression.clone(),
        None => {
            inner
                .store
                .api_segment(&id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("there is no segment `{id}`")))?
                .expression
        }
    };
    Ok(Json(preview_text(&state, text, query.sample).await?))
}

/// Counts and samples the profiles that match an expression now (nothing is saved).
#[utoipa::path(post,
    operation_id = "segments_preview_expression", path = "/segments/preview", tag = "segments", request_body = PreviewRequest,
    responses(
        (status = 200, description = "Count and sample", body = PreviewResult),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 422, description = "The expression is invalid; `details` says where", body = ErrorBody),
    ))]
pub(super) async fn preview_expression(
    State(state): State<AdminState>,
    caller: Caller,
    body: Result<Json<PreviewRequest>, JsonRejection>,
) -> ApiResult<Json<PreviewResult>> {
    caller.require(Access::ReadSegments)?;
    let Json(body) = body?;
    Ok(Json(
        preview_text(&state, body.expression, body.sample).await?,
    ))
}

async fn preview_text(
    state: &AdminState,
    text: String,
    sample: Option<usize>,
) -> ApiResult<PreviewResult> {
    let inner = state.inner()?;
    let expr = spindle_segments::parse(&text).map_err(|e| ApiError::expression(&text, &e))?;
    let segments = compile_all(&inner.config, inner.store.as_ref())
        .await
        .map_err(|e| ApiError::Internal(format!("the segments do not compile: {e}")))?;
    let started = std::time::Instant::now();
    let (count, members) = preview(
        inner.store.as_ref(),
        &segments,
        &expr,
        Utc::now(),
        sample.unwrap_or(10).min(100),
        &inner.profiles,
    )
    .await
    .map_err(|e| ApiError::Internal(format!("the preview failed: {e}")))?;
    Ok(PreviewResult {
        expression: text,
        count,
        sample: members
            .iter()
            .map(|(id, records, doc)| summary(*id, *records, doc))
            .collect(),
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Evaluates `expr` over every profile at `now` on the profile table `profiles` (brought up to date first),
/// with `segments` answering `in_segment()`; returns how many match and the first `sample` of them as
/// `(id, record count, document)`.
pub async fn preview<S: IdentityStore + ProfileChangeStore + ?Sized>(
    store: &S,
    segments: &Segments,
    expr: &Expr,
    now: DateTime<Utc>,
    sample: usize,
    profiles: &SharedProfiles,
) -> Result<(u64, Vec<(i64, u64, ProfileDocument)>), SyncError> {
    let sampled: Vec<i64>;
    let count;
    {
        let live = profiles.current(store).await?;
        let table = live.table();
        // Other segments are evaluated only when the expression refers to one.
        let sets = if spindle_segments::segment_refs(expr).is_empty() {
            Default::default()
        } else {
            spindle_sync::membership::member_sets(segments, table, now)
        };
        let members = table.evaluate(expr, now, &|other: &str| sets.get(other));
        count = members.len() as u64;
        sampled = members.ids(table).take(sample).collect();
    }
    let mut rows: Vec<(i64, u64, ProfileDocument)> = store
        .profiles_by_ids(&sampled)
        .await?
        .into_iter()
        .filter_map(|row| {
            serde_json::from_value(row.document)
                .ok()
                .map(|doc| (row.id, row.record_count, doc))
        })
        .collect();
    let order: std::collections::HashMap<i64, usize> =
        sampled.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    rows.sort_by_key(|(id, _, _)| order.get(id).copied().unwrap_or(usize::MAX));
    Ok((count, rows))
}
