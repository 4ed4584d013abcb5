//! The one retry delay policy: capped exponential backoff with "equal jitter" (half the delay is
//! fixed, half random), as an iterator of delays.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A retry policy. `iter()` yields the successive delays; it never ends, callers decide when to
/// stop (a deadline, a cancellation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Largest delay (before jitter).
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// A policy from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
        }
    }

    /// The delays, with jitter from a random seed.
    pub fn iter(&self) -> BackoffIter {
        self.iter_seeded(rand::rng().random())
    }

    /// The delays, with jitter from `seed` (deterministic, for tests).
    pub fn iter_seeded(&self, seed: u64) -> BackoffIter {
        BackoffIter {
            policy: *self,
            next: self.initial,
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

/// Iterator of backoff delays; see [`Backoff`].
#[derive(Debug, Clone)]
pub struct BackoffIter {
    policy: Backoff,
    next: Duration,
    rng: SmallRng,
}

impl BackoffIter {
    /// Starts again from the initial delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.policy.initial;
    }
}

impl Iterator for BackoffIter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (base * 2).min(self.policy.max);
        let half = base / 2;
        let jitter_nanos = self
            .rng
            .random_range(0..=half.as_nanos().min(u64::MAX as u128) as u64);
        Some(half + Duration::from_nanos(jitter_nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delays_grow_then_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<_> = b.iter_seeded(7).take(10).collect();
        // Each delay lies in [base/2, base] with base = min(100ms * 2^i, 2s).
        for (i, delay) in d.iter().enumerate() {
            let base = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(2));
            assert!(
                *delay >= base / 2 && *delay <= base,
                "{i}: {delay:?} vs {base:?}"
            );
        }
        assert!(d[9] >= Duration::from_secs(1));
    }

    #[test]
    fn reset_starts_over() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut it = b.iter_seeded(1);
        for _ in 0..6 {
            it.next();
        }
        it.reset();
        assert!(it.next().unwrap() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_retries() {
        let b = Backoff::default();
        let a: Vec<_> = b.iter_seeded(1).take(5).collect();
        let c: Vec<_> = b.iter_seeded(2).take(5).collect();
        assert_ne!(a, c);
    }

    proptest! {
        #[test]
        fn never_exceeds_max(initial_ms in 1u64..5_000, max_ms in 1u64..60_000, seed: u64) {
            let b = Backoff::new(Duration::from_millis(initial_ms), Duration::from_millis(max_ms));
            for d in b.iter_seeded(seed).take(64) {
                prop_assert!(d <= b.max);
                prop_assert!(d >= b.initial.min(b.max) / 2);
            }
        }
    }
}
