//! The scheduler loop: one task per job, no overlap, catch-up at start, coalescing.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use spindle_model::{JobId, JobTrigger};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clock::Clock;
use crate::schedule::Schedule;

/// The longest single sleep. Longer waits are cut into pieces of this size and the fire time is
/// recomputed after each, so wall-clock jumps (suspend, NTP steps) are noticed within this delay.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// What the scheduler needs from the outside world to run jobs.
#[async_trait::async_trait]
pub trait JobExecutor: Send + Sync + 'static {
    /// The `scheduled_for` time of the job's most recent recorded run (any trigger), or None if
    /// it never ran.
    async fn last_scheduled_for(&self, job: &JobId) -> Option<DateTime<Utc>>;

    /// Runs the job to completion. Must stop early (after its current transaction) when `cancel`
    /// fires.
    async fn run(
        &self,
        job: &JobId,
        trigger: JobTrigger,
        scheduled_for: DateTime<Utc>,
        cancel: CancellationToken,
    );
}

/// A job and its schedule.
#[derive(Debug, Clone)]
pub struct ScheduledJob {
    /// The job.
    pub id: JobId,
    /// When it runs by itself; None for jobs that only run when triggered manually.
    pub schedule: Option<Schedule>,
}

/// Why a manual trigger was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    /// The scheduler has no job with that id.
    #[error("no such job")]
    UnknownJob,
    /// The scheduler has stopped (or was dropped without running).
    #[error("the scheduler has stopped")]
    Stopped,
}

/// Runs a set of jobs on their schedules; see the [crate documentation](crate) for the rules.
#[derive(Debug)]
pub struct Scheduler {
    jobs: Vec<JobSlot>,
    clock: Arc<dyn Clock>,
    handle: SchedulerHandle,
}

#[derive(Debug)]
struct JobSlot {
    job: ScheduledJob,
    /// Manual triggers. Capacity 1: a trigger sent while one is already queued is coalesced.
    triggers: mpsc::Receiver<()>,
}

/// A cloneable handle to trigger jobs manually while [`Scheduler::run`] is going.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    senders: Arc<HashMap<JobId, mpsc::Sender<()>>>,
}

impl SchedulerHandle {
    /// Queues a manual run of `job`.
    ///
    /// A trigger that arrives while the job is running, or while a trigger is already queued, is
    /// coalesced: the job runs at most once more after its current run. Triggers sent before
    /// [`Scheduler::run`] starts are kept until it does.
    ///
    /// Errors: [`TriggerError::UnknownJob`] if the scheduler has no such job,
    /// [`TriggerError::Stopped`] if the scheduler has stopped.
    pub fn trigger(&self, job: &JobId) -> Result<(), TriggerError> {
        let sender = self.senders.get(job).ok_or(TriggerError::UnknownJob)?;
        match sender.try_send(()) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(())) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(())) => Err(TriggerError::Stopped),
        }
    }
}

impl Scheduler {
    /// A scheduler for `jobs`, reading the time from `clock`.
    ///
    /// Job ids must be unique; a later job with an id already seen is ignored (with a warning),
    /// since two loops for one job could overlap.
    pub fn new(jobs: Vec<ScheduledJob>, clock: Arc<dyn Clock>) -> Self {
        let mut senders = HashMap::with_capacity(jobs.len());
        let mut slots = Vec::with_capacity(jobs.len());
        for job in jobs {
            if senders.contains_key(&job.id) {
                tracing::warn!(job = %job.id, "duplicate job id; ignoring all but the first");
                continue;
            }
            let (sender, receiver) = mpsc::channel(1);
            senders.insert(job.id.clone(), sender);
            slots.push(JobSlot {
                job,
                triggers: receiver,
            });
        }
        Self {
            jobs: slots,
            clock,
            handle: SchedulerHandle {
                senders: Arc::new(senders),
            },
        }
    }

    /// A cloneable handle to trigger jobs manually while `run` is going.
    pub fn handle(&self) -> SchedulerHandle {
        self.handle.clone()
    }

    /// Runs until `cancel` fires, then waits for running jobs to finish (they get the same token)
    /// and returns.
    pub async fn run(self, executor: Arc<dyn JobExecutor>, cancel: CancellationToken) {
        let Scheduler {
            jobs,
            clock,
            handle,
        } = self;
        drop(handle);
        tracing::info!(jobs = jobs.len(), "scheduler started");
        let mut tasks = JoinSet::new();
        for slot in jobs {
            tasks.spawn(job_loop(
                slot,
                Arc::clone(&executor),
                Arc::clone(&clock),
                cancel.clone(),
            ));
        }
        while let Some(result) = tasks.join_next().await {
            if let Err(error) = result {
                tracing::error!(%error, "job loop ended abnormally");
            }
        }
        tracing::info!("scheduler stopped");
    }

    /// Runs every job once (trigger Manual, scheduled_for = clock.now()), at most `parallelism`
    /// at a time, and returns when all are done (or cancelled).
    ///
    /// A `parallelism` of 0 is treated as 1. Once `cancel` fires no further job is started; the
    /// running ones get the token and are waited for.
    pub async fn run_once(
        &self,
        executor: Arc<dyn JobExecutor>,
        parallelism: usize,
        cancel: CancellationToken,
    ) {
        let parallelism = parallelism.max(1);
        let mut pending = self.jobs.iter().map(|slot| slot.job.id.clone());
        let mut running = JoinSet::new();
        loop {
            while running.len() < parallelism && !cancel.is_cancelled() {
                let Some(id) = pending.next() else { break };
                let executor = Arc::clone(&executor);
                let clock = Arc::clone(&self.clock);
                let cancel = cancel.clone();
                running.spawn(async move {
                    let now = clock.now();
                    run_job(executor.as_ref(), &id, JobTrigger::Manual, now, &cancel).await;
                });
            }
            match running.join_next().await {
                Some(Ok(())) => {}
                Some(Err(error)) => tracing::error!(%error, "job task ended abnormally"),
                None => break,
            }
        }
    }
}

/// One job's life: catch up once if a run was missed, then sleep until the next fire time or a
/// manual trigger, run, and repeat until cancelled.
async fn job_loop(
    slot: JobSlot,
    executor: Arc<dyn JobExecutor>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    let JobSlot {
        job: ScheduledJob { id, schedule },
        mut triggers,
    } = slot;
    let executor = executor.as_ref();
    // The latest fire time handled, so that a wake-up a little early never runs a fire twice.
    let mut last_fire: Option<DateTime<Utc>> = None;

    if let Some(schedule) = &schedule {
        let last = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            last = executor.last_scheduled_for(&id) => last,
        };
        let now = clock.now();
        if let Some(missed) = last.and_then(|last| schedule.latest_between(last, now)) {
            tracing::info!(job = %id, scheduled_for = %missed, "catching up a missed run");
            last_fire = Some(missed);
            run_job(executor, &id, JobTrigger::CatchUp, missed, &cancel).await;
        }
    }

    let mut triggers_open = true;
    let mut announced: Option<Option<DateTime<Utc>>> = None;
    while !cancel.is_cancelled() {
        let now = clock.now();
        let from = last_fire.map_or(now, |fire| fire.max(now));
        let next = schedule
            .as_ref()
            .and_then(|schedule| schedule.next_after(from));
        if announced != Some(next) {
            match next {
                Some(next) => tracing::debug!(job = %id, next_fire = %next, "next fire time"),
                None => {
                    tracing::debug!(job = %id, "no fire time ahead; waiting for manual triggers")
                }
            }
            announced = Some(next);
        }
        // How long to sleep, and whether the fire time is reached when the sleep ends.
        let wait = next.map(|next| {
            let remaining = (next - now).to_std().unwrap_or(Duration::ZERO);
            if remaining > MAX_SLEEP {
                (MAX_SLEEP, None)
            } else {
                (remaining, Some(next))
            }
        });
        let sleep = async {
            match wait {
                Some((duration, _)) => tokio::time::sleep(duration).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            message = triggers.recv(), if triggers_open => match message {
                Some(()) => {
                    let now = clock.now();
                    run_job(executor, &id, JobTrigger::Manual, now, &cancel).await;
                }
                None => triggers_open = false,
            },
            () = sleep => {
                if let Some((_, Some(fire))) = wait {
                    last_fire = Some(fire);
                    run_job(executor, &id, JobTrigger::Schedule, fire, &cancel).await;
                }
            }
        }
    }
    tracing::debug!(job = %id, "job loop stopped");
}

/// Runs the job once inside an info span; a panic in the executor is logged, not propagated, so
/// the job keeps its schedule.
async fn run_job(
    executor: &dyn JobExecutor,
    id: &JobId,
    trigger: JobTrigger,
    scheduled_for: DateTime<Utc>,
    cancel: &CancellationToken,
) {
    let span = tracing::info_span!(
        "job_run",
        job = %id,
        trigger = trigger.as_str(),
        scheduled_for = %scheduled_for,
    );
    async {
        tracing::info!("job run started");
        let run = executor.run(id, trigger, scheduled_for, cancel.clone());
        match AssertUnwindSafe(run).catch_unwind().await {
            Ok(()) => tracing::info!("job run finished"),
            Err(_) => tracing::error!("job run panicked"),
        }
    }
    .instrument(span)
    .await;
}

#[cfg(test)]
mod tests;
