//! `/api/profiles`: the 360° view, lookup by identifier, search, timeline and explanation.
//!
//! Reads only. A profile id that was merged into another answers with the surviving profile (its `id`
//! says which). Computed traits are evaluated at request time, so windows such as `within 90d` are current.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spindle_identity::lookup::{LookupError, profile_holding};
use spindle_identity::profile::{self, ProfileDocument};
use spindle_store::{IdentityStore, ProfileRow};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::auth::{Access, Caller};
use super::error::{ApiError, ApiResult, ErrorBody};

/// One customer: the stored document plus computed traits evaluated now.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileView {
    /// Profile id (the surviving one when the asked id was merged).
    pub id: i64,
    /// Member records.
    pub record_count: u64,
    /// When the id was first given.
    pub created_at: DateTime<Utc>,
    /// When the profile last changed.
    pub updated_at: DateTime<Utc>,
    /// Trait name → chosen value.
    #[schema(value_type = Object)]
    pub traits: serde_json::Map<String, Value>,
    /// Computed trait name → value, evaluated at request time.
    #[schema(value_type = Object)]
    pub computed: std::collections::BTreeMap<String, Value>,
    /// Consent purpose → granted.
    #[schema(value_type = Object)]
    pub consent: std::collections::BTreeMap<String, bool>,
    /// The whole profile document: traits with their source records, identifiers with spellings and
    /// sources, rejected identifiers, member records, links, first and last seen (records written out in
    /// full, whatever the stored form).
    #[schema(value_type = Object)]
    pub document: Value,
}

/// A line of a search result.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileSummary {
    /// Profile id.
    pub id: i64,
    /// First and last name, when known.
    pub name: String,
    /// The first e-mail, when there is one.
    pub email: Option<String>,
    /// Member records.
    pub record_count: u64,
    /// Sources with at least one record.
    pub sources: Vec<String>,
}

/// A page of a profile's timeline, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelinePage {
    /// Profile id.
    pub profile_id: i64,
    /// Events on the whole timeline.
    pub total: u64,
    /// Events skipped (from the newest).
    pub offset: u64,
    /// Most events on this page.
    pub limit: u32,
    /// The events: `{event: {name, occurred_at, properties}, record: {source, stream, external_id}}`.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<profile::TimelineEvent>,
}

/// Why a profile's records are one customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Explanation {
    /// Profile id.
    pub profile_id: i64,
    /// Member records `{source, stream, external_id}`.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<spindle_model::RecordKey>,
    /// Sources with at least one record.
    pub sources: Vec<String>,
    /// The links that joined the records: `{rule, value, a, b}`.
    #[schema(value_type = Vec<Object>)]
    pub links: Vec<profile::LinkEvidence>,
    /// Identifiers with their spellings and sources.
    #[schema(value_type = Vec<Object>)]
    pub identifiers: Vec<profile::ProfileIdentifier>,
    /// Identifiers that could not be normalised, with the reason.
    #[schema(value_type = Vec<Object>)]
    pub rejected_identifiers: Vec<profile::RejectedIdentifier>,
    /// The explanation as `spindle profiles explain` prints it.
    pub text: String,
}

/// `?q=&limit=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Text contained in a name, e-mail, phone or id (case-insensitive).
    pub q: String,
    /// Most results (default 50, at most 500).
    pub limit: Option<u32>,
}

/// `?email=` or `?phone=` or `?kind=&value=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupQuery {
    /// An e-mail address.
    pub email: Option<String>,
    /// A phone number (normalised with `[identity] default_region`).
    pub phone: Option<String>,
    /// An identifier type (`user_id`, `shopify_id`, ...), with `value`.
    pub kind: Option<String>,
    /// The identifier's value, with `kind`.
    pub value: Option<String>,
}

/// `?offset=&limit=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Events to skip, from the newest (default 0).
    pub offset: Option<u64>,
    /// Most events (default 100, at most 1000).
    pub limit: Option<u32>,
}

fn document(row: &ProfileRow) -> ApiResult<ProfileDocument> {
    serde_json::from_value(row.document.clone()).map_err(|e| {
        ApiError::Internal(format!(
            "profile {} has an unreadable document: {e}",
            row.id
        ))
    })
}

/// The profile `id` (following merges), or 404.
async fn load(state: &AdminState, id: i64) -> ApiResult<(ProfileRow, ProfileDocument)> {
    let inner = state.inner()?;
    let row = inner
        .store
        .profile(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("there is no profile {id}")))?;
    let doc = document(&row)?;
    Ok((row, doc))
}

/// The member records' events, oldest first.
async fn timeline_of(
    state: &AdminState,
    doc: &ProfileDocument,
) -> ApiResult<Vec<profile::TimelineEvent>> {
    let records = state.inner()?.store.records_by_keys(&doc.records).await?;
    let members: Vec<&spindle_model::StoredRecord> = records.iter().collect();
    Ok(profile::timeline(&members))
}

async fn view(state: &AdminState, row: ProfileRow, doc: ProfileDocument) -> ApiResult<ProfileView> {
    let events = timeline_of(state, &doc).await?;
    let computed = profile::compute(
        &state.inner()?.config.profiles.computed,
        &events,
        Utc::now(),
    );
    Ok(ProfileView {
        id: row.id,
        record_count: row.record_count,
        created_at: row.created_at,
        updated_at: row.updated_at,
        traits: doc
            .traits
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect(),
        computed,
        consent: doc.consent.clone(),
        document: serde_json::to_value(&doc).map_err(|e| {
            ApiError::Internal(format!("profile {} cannot be written out: {e}", row.id))
        })?,
    })
}

/// The 360° view of one profile.
#[utoipa::path(get,
    operation_id = "profiles_get", path = "/profiles/{id}", tag = "profiles",
    params(("id" = i64, Path, description = "Profile id (a merged id answers with the surviving profile)")),
    responses(
        (status = 200, description = "The profile", body = ProfileView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such profile", body = ErrorBody),
    ))]
pub(super) async fn get(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<ProfileView>> {
    caller.require(Access::ReadProfiles)?;
    let Path(id) = id?;
    let (row, doc) = load(&state, id).await?;
    Ok(Json(view(&state, row, doc).await?))
}

/// The one profile holding an identifier.
#[utoipa::path(get,
    operation_id = "profiles_lookup", path = "/profiles/lookup", tag = "profiles", params(LookupQuery),
    responses(
        (status = 200, description = "The profile holding the identifier", body = ProfileView),
        (status = 400, description = "No identifier, or one that cannot be normalised", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No profile holds it", body = ErrorBody),
        (status = 409, description = "Several profiles hold it; the message lists them", body = ErrorBody),
    ))]
pub(super) async fn lookup(
    State(state): State<AdminState>,
    caller: Caller,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> ApiResult<Json<ProfileView>> {
    caller.require(Access::ReadProfiles)?;
    let Query(query) = query?;
    let (kind, raw) = match (query.email, query.phone, query.kind, query.value) {
        (Some(email), None, None, None) => ("email".to_owned(), email),
        (None, Some(phone), None, None) => ("phone".to_owned(), phone),
        (None, None, Some(kind), Some(value)) => (kind, value),
        _ => {
            return Err(ApiError::BadRequest(
                "name one identifier: `?email=…`, `?phone=…` or `?kind=…&value=…`".into(),
            ));
        }
    };
    let inner = state.inner()?;
    let id = profile_holding(
        inner.store.as_ref(),
        inner.config.identity.default_region.as_deref(),
        &kind,
        &raw,
    )
    .await
    .map_err(|err| match err {
        LookupError::Unusable { .. } => ApiError::BadRequest(err.to_string()),
        LookupError::NotFound { .. } => ApiError::NotFound(err.to_string()),
        LookupError::Ambiguous { .. } => ApiError::Conflict(err.to_string()),
        LookupError::Store(err) => err.into(),
    })?;
    let (row, doc) = load(&state, id).await?;
    Ok(Json(view(&state, row, doc).await?))
}

/// Profiles whose names, e-mails, phones or ids contain a text.
#[utoipa::path(get,
    operation_id = "profiles_search", path = "/profiles", tag = "profiles", params(SearchQuery),
    responses(
        (status = 200, description = "Matching profiles, by id", body = Vec<ProfileSummary>),
        (status = 400, description = "No `q`", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn search(
    State(state): State<AdminState>,
    caller: Caller,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<ProfileSummary>>> {
    caller.require(Access::ReadProfiles)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let rows = state
        .inner()?
        .store
        .search_profiles(&query.q, limit)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(summary(row.id, row.record_count, &document(row)?));
    }
    Ok(Json(out))
}

/// A profile's name, first e-mail and sources.
pub(super) fn summary(id: i64, record_count: u64, doc: &ProfileDocument) -> ProfileSummary {
    let name: Vec<&str> = ["first_name", "last_name"]
        .iter()
        .filter_map(|t| doc.traits.get(*t).and_then(|v| v.value.as_str()))
        .collect();
    ProfileSummary {
        id,
        name: name.join(" "),
        email: doc
            .identifiers
            .iter()
            .find(|i| i.kind == "email")
            .map(|i| i.value.clone()),
        record_count,
        sources: doc.sources.clone(),
    }
}

/// A page of a profile's timeline, newest first.
#[utoipa::path(get,
    operation_id = "profiles_timeline", path = "/profiles/{id}/timeline", tag = "profiles",
    params(("id" = i64, Path, description = "Profile id"), PageQuery),
    responses(
        (status = 200, description = "A page of events, newest first", body = TimelinePage),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such profile", body = ErrorBody),
    ))]
pub(super) async fn timeline(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<Json<TimelinePage>> {
    caller.require(Access::ReadProfiles)?;
    let Path(id) = id?;
    let Query(page) = page?;
    let offset = page.offset.unwrap_or(0);
    let limit = page.limit.unwrap_or(100).clamp(1, 1_000);
    let (row, doc) = load(&state, id).await?;
    let events = timeline_of(&state, &doc).await?;
    let total = events.len() as u64;
    let events = events
        .into_iter()
        .rev()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
        .collect();
    Ok(Json(TimelinePage {
        profile_id: row.id,
        total,
        offset,
        limit,
        events,
    }))
}

/// Why a profile's records are one customer: links and their evidence.
#[utoipa::path(get,
    operation_id = "profiles_explain", path = "/profiles/{id}/explain", tag = "profiles",
    params(("id" = i64, Path, description = "Profile id")),
    responses(
        (status = 200, description = "The links and their evidence", body = Explanation),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such profile", body = ErrorBody),
    ))]
pub(super) async fn explain(
    State(state): State<AdminState>,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<Explanation>> {
    caller.require(Access::ReadProfiles)?;
    let Path(id) = id?;
    let (row, doc) = load(&state, id).await?;
    let rules = spindle_identity::links::LinkRules::new(&state.inner()?.config.identity)
        .map_err(|err| ApiError::Internal(format!("identity rules: {err}")))?;
    let text = spindle_identity::explain::explain(row.id, &doc, &rules);
    Ok(Json(Explanation {
        profile_id: row.id,
        records: doc.records,
        sources: doc.sources,
        links: doc.links,
        identifiers: doc.identifiers,
        rejected_identifiers: doc.rejected_identifiers,
        text,
    }))
}
