//! Spindle's scheduler: cron schedules with time zones, no overlap, missed-run catch-up.
//!
//! # Contract
//!
//! A **job** is a [`JobId`](spindle_model::JobId) (a source pull or an audience sync) with an
//! optional [`Schedule`]: a cron expression matched against the wall clock of a time zone. What a
//! run does, and where runs are recorded, is up to a [`JobExecutor`]; this crate only decides
//! *when* to call it. [`Scheduler::run`] keeps one tokio task per job until cancelled:
//!
//! * **No overlap.** A job never runs concurrently with itself: its task calls the executor
//!   sequentially. Different jobs run concurrently.
//! * **Coalescing.** Fire times that pass while the job is running are not replayed: when the run
//!   ends, the job waits for the first fire time strictly after the current time. Manual
//!   triggers ([`SchedulerHandle::trigger`]) that arrive while it is running are coalesced into at
//!   most one extra run after the current one.
//! * **Catch-up.** At start, a scheduled job whose most recent run
//!   ([`JobExecutor::last_scheduled_for`]) is older than its latest fire time runs once
//!   immediately with trigger [`CatchUp`](spindle_model::JobTrigger::CatchUp) and `scheduled_for`
//!   set to that latest missed fire time, however many fires were missed. A job that never ran
//!   is not caught up; it waits for its next fire time. Jobs without a schedule run only when
//!   triggered.
//! * **Times.** Scheduled runs get `scheduled_for` = their fire time; manual runs get the clock's
//!   current time. The current time comes from a [`Clock`] ([`SystemClock`] in production,
//!   [`TokioClock`] in tests with tokio's paused time).
//! * **Shutdown.** When the cancellation token fires, no new run starts; running jobs receive the
//!   same token, should stop after their current transaction, and [`Scheduler::run`] returns once
//!   they have.
//!
//! # Cron dialect
//!
//! 6 or 7 fields with seconds first (as the `cron` crate reads them), or a classic 5-field
//! crontab line (fires at second 0), or `@daily`-style shorthands. Numeric days of week follow
//! **crontab** numbering (0 or 7 = Sunday, 1 = Monday … 6 = Saturday), not the Quartz numbering of
//! the `cron` crate. A local time skipped by a DST change does not fire that day; a local time
//! repeated by a DST change fires once (except for every-hour schedules, which fire at both
//! occurrences). Details in the [`schedule`] module.
#![deny(missing_docs)]

mod clock;
mod runner;
pub mod schedule;

pub use clock::{Clock, SystemClock, TokioClock};
pub use runner::{JobExecutor, ScheduledJob, Scheduler, SchedulerHandle, TriggerError};
pub use schedule::{Schedule, ScheduleError, parse_cron, parse_timezone};
