//! Spindle's HTTP server.
//!
//! One axum [`Router`] serves three areas, each in its own module with its own state:
//! - [`collector`]: the Segment-compatible tracking API under `/v1/*`, authenticated by write keys;
//! - [`admin`]: the JSON admin API under `/api/*`, authenticated by bearer tokens with roles;
//! - [`ops`]: `/healthz` (unauthenticated), `/readyz` and `/metrics`.
//!
//! [`router`] composes them, with request ids and latency metrics on every route ([`ops::instrument`]); the
//! daemon binds the listener and owns shutdown.

pub mod admin;
pub mod collector;
pub mod ops;

use axum::Router;

/// The whole server: collector, admin API and operations endpoints.
pub fn router(
    collector: collector::CollectorState,
    admin: admin::AdminState,
    ops: ops::OpsState,
) -> Router {
    ops::instrument(
        Router::new()
            .merge(collector::router(collector))
            .nest("/api", admin::router(admin))
            .merge(ops::router(ops)),
    )
}
