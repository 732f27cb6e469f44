#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use chrono::{TimeDelta, TimeZone};
use tokio::task::JoinHandle;

use super::*;
use crate::clock::TokioClock;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
}

fn job(id: JobId, expression: Option<&str>, timezone: Option<&str>) -> ScheduledJob {
    ScheduledJob {
        id,
        schedule: expression.map(|expression| Schedule::parse(expression, timezone).unwrap()),
    }
}

/// One call of [`JobExecutor::run`], as the fake executor saw it.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    job: JobId,
    trigger: JobTrigger,
    scheduled_for: DateTime<Utc>,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    cancelled: bool,
}

#[derive(Debug, Default)]
struct Counters {
    /// Runs in progress, per job and in total, and the highest values seen.
    per_job: HashMap<JobId, (usize, usize)>,
    total: (usize, usize),
}

/// Records every run; each run takes `duration` of (virtual) time, or stops 5 s after `cancel`
/// fires (its "current transaction").
#[derive(Debug)]
struct FakeExecutor {
    clock: TokioClock,
    duration: Duration,
    last: HashMap<JobId, DateTime<Utc>>,
    runs: Mutex<Vec<Run>>,
    counters: Mutex<Counters>,
}

impl FakeExecutor {
    fn new(clock: &TokioClock, duration_secs: u64) -> Self {
        Self {
            clock: clock.clone(),
            duration: Duration::from_secs(duration_secs),
            last: HashMap::new(),
            runs: Mutex::new(Vec::new()),
            counters: Mutex::new(Counters::default()),
        }
    }

    fn with_last_run(mut self, job: &JobId, scheduled_for: DateTime<Utc>) -> Self {
        self.last.insert(job.clone(), scheduled_for);
        self
    }

    fn runs(&self) -> Vec<Run> {
        self.runs.lock().unwrap().clone()
    }

    fn runs_of(&self, job: &JobId) -> Vec<Run> {
        self.runs()
            .into_iter()
            .filter(|run| &run.job == job)
            .collect()
    }

    fn max_concurrent(&self, job: &JobId) -> usize {
        self.counters
            .lock()
            .unwrap()
            .per_job
            .get(job)
            .map_or(0, |(_, max)| *max)
    }

    fn max_concurrent_total(&self) -> usize {
        self.counters.lock().unwrap().total.1
    }

    fn enter(&self, job: &JobId) {
        let mut counters = self.counters.lock().unwrap();
        let entry = counters.per_job.entry(job.clone()).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(entry.0);
        counters.total.0 += 1;
        counters.total.1 = counters.total.1.max(counters.total.0);
    }

    fn leave(&self, job: &JobId) {
        let mut counters = self.counters.lock().unwrap();
        if let Some(entry) = counters.per_job.get_mut(job) {
            entry.0 -= 1;
        }
        counters.total.0 -= 1;
    }
}

#[async_trait::async_trait]
impl JobExecutor for FakeExecutor {
    async fn last_scheduled_for(&self, job: &JobId) -> Option<DateTime<Utc>> {
        self.last.get(job).copied()
    }

    async fn run(
        &self,
        job: &JobId,
        trigger: JobTrigger,
        scheduled_for: DateTime<Utc>,
        cancel: CancellationToken,
    ) {
        let started = self.clock.now();
        self.enter(job);
        let cancelled = tokio::select! {
            () = tokio::time::sleep(self.duration) => false,
            () = cancel.cancelled() => true,
        };
        if cancelled {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        self.leave(job);
        self.runs.lock().unwrap().push(Run {
            job: job.clone(),
            trigger,
            scheduled_for,
            started,
            finished: self.clock.now(),
            cancelled,
        });
    }
}

struct Running {
    handle: SchedulerHandle,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

fn start(jobs: Vec<ScheduledJob>, clock: &TokioClock, executor: &Arc<FakeExecutor>) -> Running {
    let scheduler = Scheduler::new(jobs, Arc::new(clock.clone()));
    start_scheduler(scheduler, executor)
}

fn start_scheduler(scheduler: Scheduler, executor: &Arc<FakeExecutor>) -> Running {
    let handle = scheduler.handle();
    let cancel = CancellationToken::new();
    let executor: Arc<dyn JobExecutor> = executor.clone();
    let task = tokio::spawn(scheduler.run(executor, cancel.clone()));
    Running {
        handle,
        cancel,
        task,
    }
}

async fn sleep_secs(seconds: u64) {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

#[tokio::test(start_paused = true)]
async fn long_runs_never_overlap_and_missed_fires_are_coalesced() {
    let clock = TokioClock::starting_at(utc(2027, 1, 1, 0, 0, 30));
    let executor = Arc::new(FakeExecutor::new(&clock, 150));
    let id = JobId::source("crm");
    let running = start(
        vec![job(id.clone(), Some("0 * * * * *"), None)],
        &clock,
        &executor,
    );

    sleep_secs(615).await; // until 00:10:45
    running.cancel.cancel();
    running.task.await.unwrap();

    let runs = executor.runs_of(&id);
    let scheduled: Vec<_> = runs.iter().map(|run| run.scheduled_for).collect();
    // Each run takes 2.5 minutes; the two fires that pass during a run are dropped and the next
    // run waits for the first fire after it ended.
    assert_eq!(
        scheduled,
        [
            utc(2027, 1, 1, 0, 1, 0),
            utc(2027, 1, 1, 0, 4, 0),
            utc(2027, 1, 1, 0, 7, 0),
            utc(2027, 1, 1, 0, 10, 0),
        ]
    );
    assert!(runs.iter().all(|run| run.trigger == JobTrigger::Schedule));
    assert!(runs.iter().all(|run| run.started == run.scheduled_for));
    assert!(
        runs.windows(2)
            .all(|pair| pair[0].finished <= pair[1].started)
    );
    assert_eq!(executor.max_concurrent(&id), 1);
    let cancelled: Vec<_> = runs.iter().map(|run| run.cancelled).collect();
    assert_eq!(cancelled, [false, false, false, true]);
}

#[tokio::test(start_paused = true)]
async fn a_missed_run_is_caught_up_once_at_start() {
    let clock = TokioClock::starting_at(utc(2027, 1, 1, 7, 20, 0));
    let behind = JobId::source("crm");
    let up_to_date = JobId::source("web");
    let never_ran = JobId::sync("ads");
    let executor = Arc::new(
        FakeExecutor::new(&clock, 60)
            // Down since before 04:00: four hourly fires missed.
            .with_last_run(&behind, utc(2027, 1, 1, 3, 0, 0))
            .with_last_run(&up_to_date, utc(2027, 1, 1, 7, 0, 0)),
    );
    let hourly = Some("0 0 * * * *");
    let running = start(
        vec![
            job(behind.clone(), hourly, None),
            job(up_to_date.clone(), hourly, None),
            job(never_ran.clone(), hourly, None),
        ],
        &clock,
        &executor,
    );

    sleep_secs(45 * 60).await; // until 08:05
    running.cancel.cancel();
    running.task.await.unwrap();

    let summary = |id: &JobId| -> Vec<(JobTrigger, DateTime<Utc>, DateTime<Utc>)> {
        executor
            .runs_of(id)
            .iter()
            .map(|run| (run.trigger, run.scheduled_for, run.started))
            .collect()
    };
    let eight = utc(2027, 1, 1, 8, 0, 0);
    assert_eq!(
        summary(&behind),
        [
            (
                JobTrigger::CatchUp,
                utc(2027, 1, 1, 7, 0, 0),
                utc(2027, 1, 1, 7, 20, 0)
            ),
            (JobTrigger::Schedule, eight, eight),
        ]
    );
    assert_eq!(summary(&up_to_date), [(JobTrigger::Schedule, eight, eight)]);
    assert_eq!(
        summary(&never_ran),
        [(JobTrigger::Schedule, eight, eight)],
        "a job that never ran is not caught up"
    );
}

#[tokio::test(start_paused = true)]
async fn manual_triggers_run_jobs_and_are_coalesced_while_running() {
    let clock = TokioClock::starting_at(utc(2027, 1, 1, 0, 0, 0));
    let executor = Arc::new(FakeExecutor::new(&clock, 100));
    let audience = JobId::sync("audience");
    let crm = JobId::source("crm");
    let scheduler = Scheduler::new(
        vec![
            job(audience.clone(), None, None),
            job(crm.clone(), Some("0 0 0 1 1 *"), None), // yearly: never fires in this test
        ],
        Arc::new(clock.clone()),
    );
    // A trigger sent before `run` starts is kept.
    scheduler.handle().trigger(&crm).unwrap();
    let running = start_scheduler(scheduler, &executor);
    let handle = running.handle.clone();

    sleep_secs(10).await;
    assert!(
        executor.runs_of(&audience).is_empty(),
        "no schedule, no run"
    );
    handle.trigger(&audience).unwrap(); // starts at 00:00:10, ends at 00:01:50
    for _ in 0..3 {
        sleep_secs(10).await;
        handle.trigger(&audience).unwrap(); // while running: coalesced into one more run
    }
    assert_eq!(
        handle.trigger(&JobId::source("nope")),
        Err(TriggerError::UnknownJob)
    );

    sleep_secs(300).await;
    let audience_runs: Vec<_> = executor
        .runs_of(&audience)
        .iter()
        .map(|run| (run.trigger, run.scheduled_for, run.started))
        .collect();
    assert_eq!(
        audience_runs,
        [
            (
                JobTrigger::Manual,
                utc(2027, 1, 1, 0, 0, 10),
                utc(2027, 1, 1, 0, 0, 10)
            ),
            (
                JobTrigger::Manual,
                utc(2027, 1, 1, 0, 1, 50),
                utc(2027, 1, 1, 0, 1, 50)
            ),
        ]
    );
    let crm_runs: Vec<_> = executor
        .runs_of(&crm)
        .iter()
        .map(|run| (run.trigger, run.scheduled_for))
        .collect();
    assert_eq!(crm_runs, [(JobTrigger::Manual, utc(2027, 1, 1, 0, 0, 0))]);
    assert_eq!(executor.max_concurrent(&audience), 1);

    running.cancel.cancel();
    running.task.await.unwrap();
    assert_eq!(handle.trigger(&audience), Err(TriggerError::Stopped));
}

#[tokio::test(start_paused = true)]
async fn cancel_waits_for_the_running_job_to_stop() {
    let start_time = utc(2027, 1, 1, 0, 0, 30);
    let clock = TokioClock::starting_at(start_time);
    let executor = Arc::new(FakeExecutor::new(&clock, 150));
    let id = JobId::source("crm");
    let running = start(
        vec![job(id.clone(), Some("0 * * * * *"), None)],
        &clock,
        &executor,
    );

    sleep_secs(60).await; // 00:01:30, the run that started at 00:01:00 is in progress
    running.cancel.cancel();
    sleep_secs(1).await;
    assert!(
        !running.task.is_finished(),
        "run returned while a job was still running"
    );
    running.task.await.unwrap();

    assert_eq!(
        clock.now(),
        utc(2027, 1, 1, 0, 1, 35),
        "returned right after the job stopped"
    );
    assert_eq!(
        executor.runs(),
        [Run {
            job: id,
            trigger: JobTrigger::Schedule,
            scheduled_for: utc(2027, 1, 1, 0, 1, 0),
            started: utc(2027, 1, 1, 0, 1, 0),
            finished: utc(2027, 1, 1, 0, 1, 35),
            cancelled: true,
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_while_idle_returns_at_once() {
    let start_time = utc(2027, 1, 1, 0, 0, 0);
    let clock = TokioClock::starting_at(start_time);
    let executor = Arc::new(FakeExecutor::new(&clock, 10));
    let running = start(
        vec![
            job(JobId::source("crm"), Some("0 0 9 * * *"), None),
            job(JobId::sync("ads"), None, None),
        ],
        &clock,
        &executor,
    );
    sleep_secs(5).await;
    running.cancel.cancel();
    running.task.await.unwrap();
    assert_eq!(clock.now(), start_time + TimeDelta::seconds(5));
    assert!(executor.runs().is_empty());
}

#[tokio::test(start_paused = true)]
async fn run_once_runs_every_job_once_with_bounded_parallelism() {
    let start_time = utc(2027, 1, 1, 12, 0, 0);
    let clock = TokioClock::starting_at(start_time);
    let executor = Arc::new(FakeExecutor::new(&clock, 10));
    let ids = [
        JobId::source("crm"),
        JobId::source("web"),
        JobId::sync("ads"),
    ];
    let scheduler = Scheduler::new(
        vec![
            job(ids[0].clone(), Some("0 0 9 * * *"), None),
            job(ids[1].clone(), Some("*/5 * * * *"), Some("Europe/Paris")),
            job(ids[2].clone(), None, None),
        ],
        Arc::new(clock.clone()),
    );

    scheduler
        .run_once(executor.clone(), 2, CancellationToken::new())
        .await;

    assert_eq!(clock.now(), start_time + TimeDelta::seconds(20));
    let runs = executor.runs();
    assert_eq!(runs.len(), 3);
    for id in &ids {
        let of_job = executor.runs_of(id);
        assert_eq!(of_job.len(), 1, "{id} ran once");
        assert_eq!(of_job[0].trigger, JobTrigger::Manual);
        assert_eq!(of_job[0].scheduled_for, of_job[0].started);
    }
    assert_eq!(
        executor.runs_of(&ids[2])[0].started,
        start_time + TimeDelta::seconds(10)
    );
    assert_eq!(executor.max_concurrent_total(), 2);
}

#[tokio::test(start_paused = true)]
async fn run_once_stops_starting_jobs_when_cancelled() {
    let start_time = utc(2027, 1, 1, 12, 0, 0);
    let clock = TokioClock::starting_at(start_time);
    let executor = Arc::new(FakeExecutor::new(&clock, 10));
    let scheduler = Scheduler::new(
        vec![
            job(JobId::source("crm"), None, None),
            job(JobId::source("web"), None, None),
        ],
        Arc::new(clock.clone()),
    );
    let cancel = CancellationToken::new();
    let stopper = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            sleep_secs(3).await;
            cancel.cancel();
        })
    };
    scheduler.run_once(executor.clone(), 1, cancel).await;
    stopper.await.unwrap();

    let runs = executor.runs();
    assert_eq!(runs.len(), 1, "the second job never started");
    assert!(runs[0].cancelled);
    assert_eq!(clock.now(), start_time + TimeDelta::seconds(8));
}

#[tokio::test(start_paused = true)]
async fn fire_times_follow_the_job_time_zone_across_dst() {
    // New York moves from EST (-5) to EDT (-4) on 2027-03-14.
    let start_time = utc(2027, 3, 12, 12, 0, 0);
    let clock = TokioClock::starting_at(start_time);
    let executor = Arc::new(FakeExecutor::new(&clock, 60));
    let id = JobId::sync("ads");
    let running = start(
        vec![job(
            id.clone(),
            Some("0 0 9 * * *"),
            Some("America/New_York"),
        )],
        &clock,
        &executor,
    );

    sleep_secs(84 * 3600).await; // until 2027-03-16T00:00Z
    running.cancel.cancel();
    running.task.await.unwrap();

    let started: Vec<_> = executor
        .runs_of(&id)
        .iter()
        .map(|run| run.started)
        .collect();
    assert_eq!(
        started,
        [
            utc(2027, 3, 12, 14, 0, 0),
            utc(2027, 3, 13, 14, 0, 0),
            utc(2027, 3, 14, 13, 0, 0),
            utc(2027, 3, 15, 13, 0, 0),
        ]
    );
}

/// Panics on its first run, then behaves.
#[derive(Debug, Default)]
struct PanicsOnce {
    calls: Mutex<Vec<DateTime<Utc>>>,
}

#[async_trait::async_trait]
impl JobExecutor for PanicsOnce {
    async fn last_scheduled_for(&self, _job: &JobId) -> Option<DateTime<Utc>> {
        None
    }

    async fn run(
        &self,
        _: &JobId,
        _: JobTrigger,
        scheduled_for: DateTime<Utc>,
        _: CancellationToken,
    ) {
        let first = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(scheduled_for);
            calls.len() == 1
        };
        assert!(!first, "deliberate panic in a test executor");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_run_does_not_stop_the_schedule() {
    let clock = TokioClock::starting_at(utc(2027, 1, 1, 0, 0, 30));
    let executor = Arc::new(PanicsOnce::default());
    let scheduler = Scheduler::new(
        vec![job(JobId::source("crm"), Some("0 * * * * *"), None)],
        Arc::new(clock),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(scheduler.run(executor.clone(), cancel.clone()));
    sleep_secs(150).await;
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(
        *executor.calls.lock().unwrap(),
        [utc(2027, 1, 1, 0, 1, 0), utc(2027, 1, 1, 0, 2, 0)]
    );
}

#[test]
fn duplicate_job_ids_are_ignored() {
    let clock = TokioClock::starting_at(utc(2027, 1, 1, 0, 0, 0));
    let scheduler = Scheduler::new(
        vec![
            job(JobId::source("crm"), None, None),
            job(JobId::source("crm"), Some("0 * * * * *"), None),
        ],
        Arc::new(clock),
    );
    assert_eq!(scheduler.jobs.len(), 1);
    assert!(scheduler.jobs[0].job.schedule.is_none());
}
