//! The admin API (`/api/*`): JSON over HTTP for the marketer's and analyst's work.
//!
//! Contract:
//! - Every route, `GET /api/openapi.json` included, needs a bearer token from `[server] admin_tokens` (see
//!   [`auth`]): 401 without a valid one, 403 when the token's role may not do what the route does.
//!   `admin` may do everything; `marketer` reads and writes segments and syncs and reads profiles and
//!   sources; `viewer` reads everything but the audit log.
//! - Every write (create, update or delete a segment; run a sync or a source; replay dead letters) appends
//!   an entry to the audit log with actor `api:<token name>`. Segment writes commit with their entry in one
//!   transaction; a run or replay is recorded once the scheduler accepted it. Previews and dry runs are not
//!   writes.
//! - Segments written in `connectors.toml` (origin `config`) and segments created here (origin `api`,
//!   kept in the store) live side by side in one namespace; the API refuses (409) to change or delete a
//!   config-owned one. Expressions are checked with the segment language's parser; a bad one is 422 with
//!   the line and column.
//! - "Run now" hands the job to the scheduler ([`SchedulerHandle::trigger`]) and answers 202 at once; the
//!   run shows up in the job's history.
//! - Errors are [`ApiError`]: a status and `{"error": {"code", "message"}}`.
//! - `GET /api/openapi.json` is the OpenAPI 3.1 document of every route, generated from the handlers.

mod audit;
pub mod auth;
mod error;
mod profiles;
pub mod segments;
mod sources;
mod syncs;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use spindle_config::Config;
use spindle_scheduler::SchedulerHandle;
use spindle_store::SqlStore;
use spindle_sync::live::SharedProfiles;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Access, Caller, Role};
pub use error::{ApiError, ApiResult, ErrorBody, ErrorObject, ExpressionErrorDetails};
pub use segments::{SegmentOrigin, compile_all, segment_definitions};

/// Brings segment memberships up to date before a dry run, the way a sync run does first.
///
/// The daemon hands its executor's evaluation (which serialises with identity resolution);
/// [`EvaluateAllSegments`] is a stand-alone one.
#[async_trait]
pub trait SegmentRefresher: Send + Sync + std::fmt::Debug {
    /// Re-evaluates every segment over every profile and records who entered and left.
    async fn refresh(&self) -> Result<(), String>;
}

/// Evaluates configured and API-created segments over the store with
/// [`spindle_sync::membership::evaluate_all`].
#[derive(Debug, Clone)]
pub struct EvaluateAllSegments {
    /// The configuration (its segments).
    pub config: Arc<Config>,
    /// The store (API segments, profiles, memberships).
    pub store: Arc<SqlStore>,
    /// The profile table evaluations run on.
    pub profiles: Arc<SharedProfiles>,
}

#[async_trait]
impl SegmentRefresher for EvaluateAllSegments {
    async fn refresh(&self) -> Result<(), String> {
        let segments = segments::compile_all(&self.config, self.store.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        spindle_sync::membership::evaluate_all(
            self.store.as_ref(),
            &segments,
            &self.profiles,
            chrono::Utc::now(),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// What the admin API's handlers share. The default state has no token, so it answers 401 to everything.
#[derive(Clone, Default)]
pub struct AdminState {
    inner: Option<Arc<Inner>>,
    tokens: Arc<Vec<auth::TokenEntry>>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<Config>,
    store: Arc<SqlStore>,
    scheduler: SchedulerHandle,
    refresher: Arc<dyn SegmentRefresher>,
    profiles: Arc<SharedProfiles>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("inner", &self.inner)
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl AdminState {
    /// The admin API over `store`, with the tokens of `config` and manual runs through `scheduler`.
    /// Dry runs refresh memberships with [`EvaluateAllSegments`], and previews load a profile table of
    /// their own, until [`Self::with_refresher`] says otherwise.
    pub fn new(config: Arc<Config>, store: Arc<SqlStore>, scheduler: SchedulerHandle) -> Self {
        let profiles = Arc::new(SharedProfiles::new());
        let refresher = Arc::new(EvaluateAllSegments {
            config: config.clone(),
            store: store.clone(),
            profiles: profiles.clone(),
        });
        Self {
            tokens: Arc::new(auth::tokens(&config.server)),
            inner: Some(Arc::new(Inner {
                config,
                store,
                scheduler,
                refresher,
                profiles,
            })),
        }
    }

    /// Uses `refresher` to bring memberships up to date before a dry run, and `profiles` (the table the
    /// refresher evaluates on) for previews.
    pub fn with_refresher(
        self,
        refresher: Arc<dyn SegmentRefresher>,
        profiles: Arc<SharedProfiles>,
    ) -> Self {
        let inner = self.inner.map(|inner| {
            Arc::new(Inner {
                config: inner.config.clone(),
                store: inner.store.clone(),
                scheduler: inner.scheduler.clone(),
                refresher,
                profiles,
            })
        });
        Self { inner, ..self }
    }

    pub(crate) fn tokens(&self) -> &[auth::TokenEntry] {
        &self.tokens
    }

    fn inner(&self) -> ApiResult<&Inner> {
        self.inner
            .as_deref()
            .ok_or_else(|| ApiError::Unavailable("the admin API is not configured".into()))
    }
}

/// The entry `id` of a configuration section (`what` names its kind), or 404 listing the ids there are.
fn configured<'a, T>(
    section: &'a std::collections::BTreeMap<String, T>,
    what: &str,
    id: &str,
) -> ApiResult<&'a T> {
    section.get(id).ok_or_else(|| {
        let ids: Vec<&str> = section.keys().map(String::as_str).collect();
        ApiError::NotFound(format!(
            "there is no {what} `{id}` in connectors.toml; {what}s: {}",
            if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.join(", ")
            }
        ))
    })
}

/// Adds the bearer security scheme to the document.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `[server] admin_tokens` in connectors.toml; its role (admin, marketer, \
                         viewer) decides what it may do.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Spindle admin API",
        description = "Profiles, segments, audience syncs, sources and the audit log of a Spindle installation. \
                       Every route but this document needs `Authorization: Bearer <token>`; errors are \
                       `{\"error\": {\"code\", \"message\"}}`."
    ),
    servers((url = "/api")),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "profiles", description = "Customer profiles: 360° view, lookup, search, timeline, explain"),
        (name = "segments", description = "Segments from connectors.toml and from the API; preview"),
        (name = "syncs", description = "Audience syncs: run now, dry run, history, dead letters"),
        (name = "sources", description = "Sources: status and run now"),
        (name = "audit", description = "The append-only audit log (admin only)"),
    )
)]
struct ApiDoc;

/// The routes and their OpenAPI document, before state is given.
fn api() -> (Router<AdminState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(profiles::search))
        .routes(routes!(profiles::lookup))
        .routes(routes!(profiles::get))
        .routes(routes!(profiles::timeline))
        .routes(routes!(profiles::explain))
        .routes(routes!(segments::list, segments::create))
        .routes(routes!(segments::get, segments::update, segments::delete))
        .routes(routes!(segments::preview_segment))
        .routes(routes!(segments::preview_expression))
        .routes(routes!(syncs::list))
        .routes(routes!(syncs::get))
        .routes(routes!(syncs::run))
        .routes(routes!(syncs::dry_run))
        .routes(routes!(syncs::history))
        .routes(routes!(syncs::dead_letters))
        .routes(routes!(syncs::replay))
        .routes(routes!(sources::list))
        .routes(routes!(sources::get))
        .routes(routes!(sources::run))
        .routes(routes!(audit::list))
        .split_for_parts()
}

/// The OpenAPI 3.1 document of the admin API (served at `/api/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// The admin API's routes, relative to `/api`.
pub fn router(state: AdminState) -> Router {
    let (routes, doc) = api();
    let doc = Arc::new(doc);
    routes
        .route(
            "/openapi.json",
            // Any token may read it: every endpoint but /healthz is authenticated.
            axum::routing::get(move |_caller: Caller| {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async {
            ApiError::NotFound("no such admin API route; /api/openapi.json lists them".into())
        })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed(
                "this admin API route does not take that method; /api/openapi.json lists them"
                    .into(),
            )
        })
        .with_state(state)
}
