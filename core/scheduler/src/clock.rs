//! Wall clocks the scheduler reads "now" from.

use chrono::{DateTime, TimeDelta, Utc};

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system wall clock ([`Utc::now`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall clock that follows tokio's clock: anchored at construction to a given UTC time and
/// [`tokio::time::Instant::now`], so with `tokio::time::pause()` tests control wall time too.
#[derive(Debug, Clone)]
pub struct TokioClock {
    anchor: DateTime<Utc>,
    started: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `at` now and advances with tokio's clock from here on.
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        Self {
            anchor: at,
            started: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = TimeDelta::from_std(self.started.elapsed()).unwrap_or(TimeDelta::MAX);
        self.anchor
            .checked_add_signed(elapsed)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let start = Utc
            .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
            .single()
            .expect("valid date");
        let clock = TokioClock::starting_at(start);
        assert_eq!(clock.now(), start);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start + TimeDelta::seconds(90));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now(), start + TimeDelta::seconds(3690));
    }

    #[test]
    fn system_clock_is_close_to_utc_now() {
        let before = Utc::now();
        let now = SystemClock.now();
        assert!(now >= before);
        assert!(now - before < TimeDelta::seconds(5));
    }
}
