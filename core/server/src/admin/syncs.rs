//! `/api/syncs`: audience syncs with their last run, run now, dry run, history and dead letters.
//!
//! Contract:
//! - Syncs are the `[syncs.<id>]` of `connectors.toml`; an unknown id is 404.
//! - Run now and replay queue the sync's job with the scheduler and answer 202; a trigger sent while the
//!   job runs or is queued already is coalesced into one more run. Each is recorded in the audit log once
//!   accepted.
//! - A dry run brings memberships up to date (as a run does first) and returns the changes a run would
//!   send, without sending anything or touching the outbox; it is not audited.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use spindle_config::{SyncConfig, SyncMode};
use spindle_model::{JobId, JobRun};
use spindle_scheduler::TriggerError;
use spindle_store::{ProfileStore, SyncStore};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Access, Caller};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::{AdminState, Inner, configured};

/// One run of a job.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// Run id.
    pub id: i64,
    /// `source:<id>`, `sync:<id>` or `identity`.
    pub job: String,
    /// `schedule`, `catchup` or `manual`.
    pub trigger: &'static str,
    /// `running`, `succeeded`, `failed`, `cancelled` or `interrupted`.
    pub status: &'static str,
    /// The schedule time it stands for (the start time for manual runs).
    pub scheduled_for: DateTime<Utc>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended, if it has.
    pub finished_at: Option<DateTime<Utc>>,
    /// The error that ended it.
    pub error: Option<String>,
    /// What it did: `read`, `inserted`, `updated`, `unchanged`, `quarantined`, `removed`, `delivered`,
    /// `rejected`, `retried` (those that do not apply stay 0).
    #[schema(value_type = Object)]
    pub counts: spindle_model::JobCounts,
}

impl From<JobRun> for RunView {
    fn from(run: JobRun) -> Self {
        RunView {
            id: run.id,
            job: run.job.to_string(),
            trigger: run.trigger.as_str(),
            status: run.status.as_str(),
            scheduled_for: run.scheduled_for,
            started_at: run.started_at,
            finished_at: run.finished_at,
            error: run.error,
            counts: run.counts,
        }
    }
}

/// A sync with its state.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncView {
    /// Its id.
    pub id: String,
    /// The segment it sends.
    pub segment: String,
    /// The destination it sends to.
    pub destination: String,
    /// `upsert`, `mirror` or `add_only`.
    pub mode: &'static str,
    /// Destination field → trait, computed trait or identifier type.
    pub fields: std::collections::BTreeMap<String, String>,
    /// Consent purpose members must have granted.
    pub consent: Option<String>,
    /// Cron expression; absent when it runs on demand only.
    pub schedule: Option<String>,
    /// Time zone of the schedule.
    pub timezone: Option<String>,
    /// The most recent run.
    pub last_run: Option<RunView>,
    /// Changes waiting in the outbox.
    pub pending: u64,
    /// Changes the destination refused.
    pub dead_letters: u64,
}

/// A run was queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    /// The job queued: `sync:<id>` or `source:<id>`.
    pub job: String,
    /// Always `queued`: the run shows up in the history when it starts.
    pub status: &'static str,
    /// For a replay: dead letters given another chance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<u64>,
}

/// A change a dry run found.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlannedChangeView {
    /// `add`, `update` or `remove`.
    pub action: &'static str,
    /// The profile.
    pub profile_id: i64,
    /// The payload that would be sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// What a run would send now.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRun {
    /// The sync.
    pub sync: String,
    /// How many changes.
    pub count: u64,
    /// The changes.
    pub changes: Vec<PlannedChangeView>,
}

/// A change the destination refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// Dead letter id.
    pub id: i64,
    /// The profile.
    pub profile_id: i64,
    /// `upsert` or `remove`.
    pub op: String,
    /// The payload that was sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The identifiers sent with it, `[[type, value], ...]`.
    #[schema(value_type = Object)]
    pub identifiers: serde_json::Value,
    /// Why the destination refused it.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// `?limit=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// Most runs (default 20, at most 500).
    pub limit: Option<u32>,
}

fn mode(mode: SyncMode) -> &'static str {
    match mode {
        SyncMode::Upsert => "upsert",
        SyncMode::Mirror => "mirror",
        SyncMode::AddOnly => "add_only",
    }
}

fn known<'a>(inner: &'a Inner, id: &str) -> ApiResult<&'a SyncConfig> {
    configured(&inner.config.syncs, "sync", id)
}

/// Queues a manual run of `job` with the scheduler.
pub(super) fn queue(inner: &Inner, job: &JobId) -> ApiResult<()> {
    inner.scheduler.trigger(job).map_err(|err| match err {
        TriggerError::UnknownJob => ApiError::Unavailable(format!(
            "the scheduler of this daemon does not run `{job}`; is the daemon serving an older configuration?"
        )),
        TriggerError::Stopped => ApiError::Unavailable("the scheduler has stopped (shutting down?)".into()),
    })
}

/// Queues a manual run of `job`, then records `action` on `target` in the audit log; answers 202.
pub(super) async fn run_now(
    inner: &Inner,
    caller: &Caller,
    job: &JobId,
    action: &str,
    target: &str,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    queue(inner, job)?;
    inner
        .store
        .append_audit(caller.audit(action, target, serde_json::json!({})))
        .await?;
    tracing::info!(job = %job, token = %caller.name, "admin API: run queued");
    Ok(Queued::accepted(job, None))
}

impl Queued {
    fn accepted(job: &JobId, replayed: Option<u64>) -> (StatusCode, Json<Queued>) {
        (
            StatusCode::ACCEPTED,
            Json(Queued {
                job: job.to_string(),
                status: "queued",
                replayed,
            }),
        )
    }
}

fn parsed(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

async fn view(inner: &Inner, sync: &SyncConfig) -> ApiResult<SyncView> {
    let store = inner.store.as_ref();
    Ok(SyncView {
        id: sync.id.clone(),
        segment: sync.segment.clone(),
        destination: sync.destination.clone(),
        mode: mode(sync.mode),
        fields: sync.fields.clone(),
        consent: sync.consent.clone(),
        schedule: sync.schedule.as_ref().map(|s| s.expression().to_owned()),
        timezone: sync.schedule.as_ref().map(|s| s.timezone().to_string()),
        last_run: store
            .last_run(&JobId::sync(&sync.id))
            .await?
            .map(RunView::from),
        pending: store.pending(&sync.id).await?,
        dead_letters: store.dead_letters(&sync.id).await?.len() as u64,
    })
}

/// Every sync with its last run, pending changes and dead letters.
#[utoipa::path(get,
    operation_id = "syncs_list", path = "/syncs", tag = "syncs",
    responses(
        (status = 200, description = "The syncs, by id", body = Vec<SyncView>),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn list(
    State(state): State<AdminState>,
    caller: Caller,
) -> ApiResult<Json<Vec<SyncView>>> {
    caller.require(Access::ReadSyncs)?;
    let inner = state.inner()?;
    let mut out = Vec::new();
    for sync in inner.config.syncs.values() {
        out.push(view(inner, sync).await?);
    }
    Ok(Json(out))
}

/// One sync with its state.
#[utoipa::path(get,
    operation_id = "syncs_get", path = "/syncs/{id}", tag = "syncs",
    params(("id" = String, Path, description = "Sync id")),
    responses(
        (status = 200, description = "The sync", body = SyncView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such sync", body = ErrorBody),
    ))]
pub(super) async fn get(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<SyncView>> {
    caller.require(Access::ReadSyncs)?;
    let Path(id) = id?;
    let inner = state.inner()?;
    Ok(Json(view(inner, known(inner, &id)?).await?))
}

/// Runs a sync now (queued with the scheduler).
#[utoipa::path(post,
    operation_id = "syncs_run", path = "/syncs/{id}/run", tag = "syncs",
    params(("id" = String, Path, description = "Sync id")),
    responses(
        (status = 202, description = "Queued; see the history for the run", body = Queued),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not run syncs", body = ErrorBody),
        (status = 404, description = "No such sync", body = ErrorBody),
        (status = 503, description = "The scheduler cannot take it", body = ErrorBody),
    ))]
pub(super) async fn run(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    caller.require(Access::OperateSyncs)?;
    let Path(id) = id?;
    let inner = state.inner()?;
    known(inner, &id)?;
    run_now(inner, &caller, &JobId::sync(&id), "sync.run", &id).await
}

/// The changes a run would send now, without sending them.
#[utoipa::path(post,
    operation_id = "syncs_dry_run", path = "/syncs/{id}/dry-run", tag = "syncs",
    params(("id" = String, Path, description = "Sync id")),
    responses(
        (status = 200, description = "The changes a run would send", body = DryRun),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not run syncs", body = ErrorBody),
        (status = 404, description = "No such sync", body = ErrorBody),
    ))]
pub(super) async fn dry_run(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<DryRun>> {
    caller.require(Access::OperateSyncs)?;
    let Path(id) = id?;
    let inner = state.inner()?;
    let sync = known(inner, &id)?;
    inner
        .refresher
        .refresh()
        .await
        .map_err(|e| ApiError::Internal(format!("bringing segment memberships up to date: {e}")))?;
    let (_, plan) = spindle_sync::engine::plan(inner.store.as_ref(), sync)
        .await
        .map_err(|e| ApiError::Internal(format!("planning sync `{id}`: {e}")))?;
    let changes: Vec<PlannedChangeView> = plan
        .into_iter()
        .map(|c| PlannedChangeView {
            action: c.action,
            profile_id: c.profile_id,
            payload: parsed(&c.payload),
        })
        .collect();
    Ok(Json(DryRun {
        sync: id,
        count: changes.len() as u64,
        changes,
    }))
}

/// A sync's recent runs, newest first.
#[utoipa::path(get,
    operation_id = "syncs_history", path = "/syncs/{id}/runs", tag = "syncs",
    params(("id" = String, Path, description = "Sync id"), LimitQuery),
    responses(
        (status = 200, description = "Runs, newest first", body = Vec<RunView>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such sync", body = ErrorBody),
    ))]
pub(super) async fn history(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<RunView>>> {
    caller.require(Access::ReadSyncs)?;
    let Path(id) = id?;
    let Query(query) = query?;
    let inner = state.inner()?;
    known(inner, &id)?;
    let runs = inner
        .store
        .runs(
            Some(&JobId::sync(&id)),
            query.limit.unwrap_or(20).clamp(1, 500),
        )
        .await?;
    Ok(Json(runs.into_iter().map(RunView::from).collect()))
}

/// The changes a sync's destination refused, oldest first.
#[utoipa::path(get,
    operation_id = "syncs_dead_letters", path = "/syncs/{id}/dead-letters", tag = "syncs",
    params(("id" = String, Path, description = "Sync id")),
    responses(
        (status = 200, description = "Dead letters, oldest first", body = Vec<DeadLetterView>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such sync", body = ErrorBody),
    ))]
pub(super) async fn dead_letters(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Vec<DeadLetterView>>> {
    caller.require(Access::ReadSyncs)?;
    let Path(id) = id?;
    let inner = state.inner()?;
    known(inner, &id)?;
    let letters = inner.store.dead_letters(&id).await?;
    Ok(Json(
        letters
            .into_iter()
            .map(|l| DeadLetterView {
                id: l.id,
                profile_id: l.item.profile_id,
                op: l.item.op,
                payload: parsed(&l.item.payload),
                identifiers: parsed(&l.item.identifiers),
                reason: l.reason,
                at: l.at,
            })
            .collect(),
    ))
}

/// Gives a sync's dead letters another chance and queues a run.
#[utoipa::path(post,
    operation_id = "syncs_replay", path = "/syncs/{id}/dead-letters/replay", tag = "syncs",
    params(("id" = String, Path, description = "Sync id")),
    responses(
        (status = 202, description = "Replayed and a run queued", body = Queued),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not run syncs", body = ErrorBody),
        (status = 404, description = "No such sync", body = ErrorBody),
        (status = 503, description = "Replayed, but the scheduler cannot take a run now", body = ErrorBody),
    ))]
pub(super) async fn replay(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    caller.require(Access::OperateSyncs)?;
    let Path(id) = id?;
    let inner = state.inner()?;
    known(inner, &id)?;
    let replayed = inner.store.replay_dead_letters(&id, Utc::now()).await?;
    inner
        .store
        .append_audit(caller.audit(
            "sync.replay",
            &id,
            serde_json::json!({ "replayed": replayed }),
        ))
        .await?;
    tracing::info!(sync = %id, token = %caller.name, replayed, "admin API: dead letters replayed");
    let job = JobId::sync(&id);
    queue(inner, &job).map_err(|err| {
        ApiError::Unavailable(format!(
            "{replayed} dead letter(s) are back for the next run, but no run could be queued now: {err}"
        ))
    })?;
    Ok(Queued::accepted(&job, Some(replayed)))
}
