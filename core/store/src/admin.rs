//! What the admin API keeps: segments created through the API, behind [`AdminStore`].
//!
//! Contract:
//! - `api_segments` holds segments created through the admin API, one row per id. Segments written in
//!   `connectors.toml` are never stored here; the caller refuses an API segment whose id a configured
//!   segment already has.
//! - Every change (create, update, delete) commits together with its audit-log entry: the log holds an
//!   entry for a change exactly when the change happened.
//! - Deleting a segment removes its current members in the same transaction, appending an `exited` entry
//!   to `segment_history` for each (the membership contract of [`crate::SyncStore`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spindle_model::NewAuditEntry;
use sqlx::Row;

use crate::StoreResult;
use crate::sql::{SqlStore, from_millis, to_millis};

/// A segment created through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSegment {
    /// Its id (shares the namespace of configured segments).
    pub id: String,
    /// The segment expression, as written.
    pub expression: String,
    /// What it is for.
    pub description: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Who created it (an audit actor, e.g. `api:alice`).
    pub created_by: String,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Who changed it last.
    pub updated_by: String,
}

/// A segment to create or the new content of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSegmentWrite {
    /// Its id.
    pub id: String,
    /// The segment expression (already validated by the caller).
    pub expression: String,
    /// What it is for.
    pub description: Option<String>,
    /// Who is writing it (an audit actor).
    pub actor: String,
}

/// Storage of the admin API's own state.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Every API-created segment, by id.
    async fn api_segments(&self) -> StoreResult<Vec<ApiSegment>>;
    /// One API-created segment.
    async fn api_segment(&self, id: &str) -> StoreResult<Option<ApiSegment>>;
    /// Creates a segment and appends `audit`, in one transaction; `None` (and nothing written) when a
    /// segment with that id exists already.
    async fn create_api_segment(
        &self,
        segment: ApiSegmentWrite,
        audit: NewAuditEntry,
    ) -> StoreResult<Option<ApiSegment>>;
    /// Replaces a segment's expression and description and appends `audit`, in one transaction; `None`
    /// (and nothing written) when there is no such segment.
    async fn update_api_segment(
        &self,
        segment: ApiSegmentWrite,
        audit: NewAuditEntry,
    ) -> StoreResult<Option<ApiSegment>>;
    /// Deletes a segment with its current memberships (each recorded as an exit) and appends `audit`, in
    /// one transaction; `false` (and nothing written) when there is no such segment.
    async fn delete_api_segment(&self, id: &str, audit: NewAuditEntry) -> StoreResult<bool>;
}

const COLUMNS: &str = "id, expression, description, created_at, created_by, updated_at, updated_by";

fn decode(row: &sqlx::any::AnyRow) -> StoreResult<ApiSegment> {
    Ok(ApiSegment {
        id: row.try_get("id")?,
        expression: row.try_get("expression")?,
        description: row.try_get("description")?,
        created_at: from_millis(row.try_get("created_at")?)?,
        created_by: row.try_get("created_by")?,
        updated_at: from_millis(row.try_get("updated_at")?)?,
        updated_by: row.try_get("updated_by")?,
    })
}

/// Appends an audit entry inside the caller's transaction.
async fn audit_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    entry: &NewAuditEntry,
    at: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(at)
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(serde_json::to_string(&entry.details)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl AdminStore for SqlStore {
    async fn api_segments(&self) -> StoreResult<Vec<ApiSegment>> {
        let sql = format!("SELECT {COLUMNS} FROM api_segments ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn api_segment(&self, id: &str) -> StoreResult<Option<ApiSegment>> {
        let sql = format!("SELECT {COLUMNS} FROM api_segments WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    async fn create_api_segment(
        &self,
        segment: ApiSegmentWrite,
        audit: NewAuditEntry,
    ) -> StoreResult<Option<ApiSegment>> {
        let now = to_millis(Utc::now());
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "INSERT INTO api_segments ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $4, $5) \
             ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&segment.id)
            .bind(&segment.expression)
            .bind(&segment.description)
            .bind(now)
            .bind(&segment.actor)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let created = decode(&row)?;
        audit_in(&mut tx, &audit, now).await?;
        tx.commit().await?;
        Ok(Some(created))
    }

    async fn update_api_segment(
        &self,
        segment: ApiSegmentWrite,
        audit: NewAuditEntry,
    ) -> StoreResult<Option<ApiSegment>> {
        let now = to_millis(Utc::now());
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE api_segments SET expression = $2, description = $3, updated_at = $4, updated_by = $5 \
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&segment.id)
            .bind(&segment.expression)
            .bind(&segment.description)
            .bind(now)
            .bind(&segment.actor)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let updated = decode(&row)?;
        audit_in(&mut tx, &audit, now).await?;
        tx.commit().await?;
        Ok(Some(updated))
    }

    async fn delete_api_segment(&self, id: &str, audit: NewAuditEntry) -> StoreResult<bool> {
        let now = to_millis(Utc::now());
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM api_segments WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO segment_history (segment, profile_id, change, at) \
             SELECT segment, profile_id, 'exited', $2 FROM segment_members WHERE segment = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM segment_members WHERE segment = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit_in(&mut tx, &audit, now).await?;
        tx.commit().await?;
        Ok(true)
    }
}
