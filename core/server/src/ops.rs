//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`.

use axum::Router;

/// What the operations endpoints share.
#[derive(Debug, Clone, Default)]
pub struct OpsState {}

/// The operations routes.
pub fn router(state: OpsState) -> Router {
    Router::new().with_state(state)
}
