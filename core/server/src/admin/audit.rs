//! `/api/audit`: the append-only audit log, oldest first, paged by id. Admin only.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use spindle_store::ProfileStore;
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::auth::{Access, Caller};
use super::error::{ApiResult, ErrorBody};

/// One audit-log entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    /// Position in the log; strictly increasing.
    pub id: i64,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// Who acted: `api:<token name>`, `cli:<user>`, `daemon`.
    pub actor: String,
    /// What they did: `segment.create`, `sync.run`, `source.full_resync`, ...
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// Further detail.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// `?after=&limit=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries with an id greater than this (default 0: from the start).
    pub after: Option<i64>,
    /// Most entries (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Audit-log entries after an id, oldest first.
#[utoipa::path(get,
    operation_id = "audit_list", path = "/audit", tag = "audit", params(AuditQuery),
    responses(
        (status = 200, description = "Entries, oldest first; page on with `after` = the last id", body = Vec<AuditView>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Only admin tokens may read the audit log", body = ErrorBody),
    ))]
pub(super) async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<AuditView>>> {
    caller.require(Access::ReadAudit)?;
    let Query(query) = query?;
    let entries = state
        .inner()?
        .store
        .audit_log(
            query.after.unwrap_or(0),
            query.limit.unwrap_or(100).clamp(1, 1_000),
        )
        .await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| AuditView {
                id: e.id,
                at: e.at,
                actor: e.entry.actor,
                action: e.entry.action,
                target: e.entry.target,
                details: e.entry.details,
            })
            .collect(),
    ))
}
