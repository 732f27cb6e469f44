//! The HTTP server of `spindle run` (daemon mode): collector, admin API and operations endpoints.
//!
//! Contract:
//! - [`start`] binds `[server] listen` before anything is served, so a taken port fails the daemon at start
//!   with a message naming the address; then it serves [`spindle_server::router`] in a task of its own.
//! - The collector's writer stores events by group commit; after commits that stored records, identity
//!   resolution runs (which re-evaluates the segments of the profiles it touched), at most once per
//!   [`RESOLVE_EVERY`] while events keep coming, so profiles and timelines follow the collector closely
//!   without one resolution per request.
//! - On cancellation the server stops accepting, answers the requests in flight, then the writer commits
//!   what is queued, and one last resolution covers it; [`Server::finished`] returns after all of that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use spindle_config::Config;
use spindle_scheduler::SchedulerHandle;
use spindle_server::collector::CollectorState;
use spindle_server::ops::OpsState;
use spindle_store::SqlStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::executor::DaemonExecutor;

/// Least time between two resolutions triggered by the collector.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(1);

/// The running server.
#[derive(Debug)]
pub struct Server {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Waits until the server has stopped (after cancellation) and everything it acknowledged is stored.
    pub async fn finished(self) -> anyhow::Result<()> {
        self.task.await.context("the HTTP server task failed")?
    }
}

/// Binds `[server] listen` and starts serving until `cancel` is cancelled.
pub async fn start(
    config: &Arc<Config>,
    store: Arc<SqlStore>,
    executor: Arc<DaemonExecutor>,
    scheduler: SchedulerHandle,
    cancel: CancellationToken,
) -> anyhow::Result<Server> {
    let listen: SocketAddr = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen} ([server] listen): is another process using the port? \
                 Stop it or choose another address"
            )
        })?;
    let (collector, writer) = CollectorState::start(store.clone(), &config.server);
    let admin = crate::admin_wiring::admin_state(
        config.clone(),
        store.clone(),
        executor.clone(),
        scheduler,
    );
    let ops = OpsState::new(store, &config.server);
    let app = spindle_server::router(collector, admin, ops);
    let bound = listener.local_addr().unwrap_or(listen);
    tracing::info!(
        listen = %bound,
        write_keys = config.server.write_keys.len(),
        admin_tokens = config.server.admin_tokens.len(),
        "HTTP server listening"
    );
    let commits = writer.commits();
    let follower = tokio::spawn(resolve_after_commits(
        commits,
        executor.clone(),
        cancel.clone(),
    ));
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await
            .context("the HTTP server failed");
        // The router (and with it every sender to the writer) is gone: the writer drains and stops.
        writer.finished().await;
        if let Err(err) = follower.await {
            tracing::error!(error = %err, "the collector's resolution task failed");
        }
        // Whatever the last commits stored is resolved before the daemon exits.
        if let Err(err) = executor.resolve().await {
            tracing::error!(error = %err, "resolving the collector's last events failed");
        }
        tracing::info!("HTTP server stopped");
        served
    });
    Ok(Server { task })
}

/// Resolves identities after collector commits, at most once per [`RESOLVE_EVERY`].
async fn resolve_after_commits(
    mut commits: watch::Receiver<u64>,
    executor: Arc<DaemonExecutor>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = commits.changed() => if changed.is_err() { return },
        }
        let stored = *commits.borrow_and_update();
        tracing::debug!(stored_total = stored, "collector events stored; resolving");
        if let Err(err) = executor.resolve().await {
            tracing::error!(error = %err, "resolving collector events failed; retrying after the next commit");
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RESOLVE_EVERY) => {}
        }
    }
}
