//! The Segment-compatible event collector (`/v1/*`).

use axum::Router;

/// What the collector's handlers share.
#[derive(Debug, Clone, Default)]
pub struct CollectorState {}

/// The collector's routes.
pub fn router(state: CollectorState) -> Router {
    Router::new().with_state(state)
}
