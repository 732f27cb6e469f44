//! The admin API (`/api/*`).

use axum::Router;

/// What the admin API's handlers share.
#[derive(Debug, Clone, Default)]
pub struct AdminState {}

/// The admin API's routes, relative to `/api`.
pub fn router(state: AdminState) -> Router {
    Router::new().with_state(state)
}
