//! Builds the admin API's state from the daemon's parts: configuration, store, executor and scheduler.
//!
//! Manual runs go through the scheduler (so they never overlap a scheduled run of the same job); a dry run
//! brings memberships up to date through the executor, the same evaluation a sync run does first.

use std::sync::Arc;

use async_trait::async_trait;
use spindle_config::Config;
use spindle_scheduler::SchedulerHandle;
use spindle_server::admin::{AdminState, SegmentRefresher};
use spindle_store::SqlStore;

use crate::executor::DaemonExecutor;

/// Segment evaluation through the daemon's executor.
#[derive(Debug)]
struct ExecutorRefresher(Arc<DaemonExecutor>);

#[async_trait]
impl SegmentRefresher for ExecutorRefresher {
    async fn refresh(&self) -> Result<(), String> {
        self.0.evaluate_segments().await
    }
}

/// The admin API's state for a running daemon.
pub fn admin_state(
    config: Arc<Config>,
    store: Arc<SqlStore>,
    executor: Arc<DaemonExecutor>,
    scheduler: SchedulerHandle,
) -> AdminState {
    let profiles = executor.profiles();
    AdminState::new(config, store, scheduler)
        .with_refresher(Arc::new(ExecutorRefresher(executor)), profiles)
}
