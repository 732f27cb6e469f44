//! Builds the admin API's state from the daemon's parts: configuration, store, executor and scheduler.

use std::sync::Arc;

use spindle_config::Config;
use spindle_scheduler::SchedulerHandle;
use spindle_server::admin::AdminState;
use spindle_store::SqlStore;

use crate::executor::DaemonExecutor;

/// The admin API's state for a running daemon.
pub fn admin_state(
    _config: Arc<Config>,
    _store: Arc<SqlStore>,
    _executor: Arc<DaemonExecutor>,
    _scheduler: SchedulerHandle,
) -> AdminState {
    AdminState::default()
}
