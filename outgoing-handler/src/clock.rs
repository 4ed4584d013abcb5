//! Wall-clock time, injectable: round times (`opens_at_ms`, `closes_at_ms`) and the state file are
//! in epoch milliseconds, while the scheduler's one-second ticks run on Tokio's clock. Tests pause
//! Tokio's clock and use [`TokioClock`], so both clocks advance together.

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's real-time clock (what SQS's `SentTimestamp` is compared with).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            // A clock set before 1970 is broken; 0 keeps every comparison well defined.
            Err(_) => 0,
        }
    }
}

/// A wall clock that starts at a given epoch time and advances with Tokio's clock, so a test
/// with `#[tokio::test(start_paused = true)]` controls it completely.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch_ms: i64,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `epoch_ms` now. Must be called inside a Tokio runtime.
    pub fn starting_at(epoch_ms: i64) -> Self {
        Self {
            epoch_ms,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.epoch_ms.saturating_add(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::starting_at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(clock.now_ms(), 3_500);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
