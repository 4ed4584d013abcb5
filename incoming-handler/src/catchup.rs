//! "Has this queue been read up to that moment?" — so that a press is never rejected because its
//! round's timestamp message (or its player's registration) has not been applied yet.
//!
//! A consumer records the start instant of each receive that came back with fewer messages than
//! it asked for, once everything it returned is applied: every message enqueued before that
//! instant has then been applied (by this or another handler, give or take the moment another
//! handler holds it, covered by [`GRACE`]). A press received at `t` whose rejection may depend on
//! an unknown round is final only once the timestamp queue has caught up past `t + GRACE`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Extra margin for a message another handler instance has received but not yet committed.
pub const GRACE: Duration = Duration::from_millis(500);

/// The latest instant up to which a queue has been read and applied.
#[derive(Debug, Clone)]
pub struct CatchUp {
    origin: Instant,
    /// Nanoseconds since `origin` + 1 (0 = never).
    caught_up: Arc<AtomicU64>,
}

impl CatchUp {
    /// Nothing read yet.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            caught_up: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A receive started at `started` returned everything there was, and it is applied.
    pub fn mark(&self, started: Instant) {
        let n = started.saturating_duration_since(self.origin).as_nanos() as u64 + 1;
        self.caught_up.fetch_max(n, Ordering::AcqRel);
    }

    /// Whether everything enqueued before `t + GRACE` has been applied.
    pub fn covers(&self, t: Instant) -> bool {
        let need = (t + GRACE)
            .saturating_duration_since(self.origin)
            .as_nanos() as u64
            + 1;
        self.caught_up.load(Ordering::Acquire) >= need
    }
}

impl Default for CatchUp {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn covers_only_after_a_later_complete_receive() {
        let c = CatchUp::new();
        let press_received = Instant::now();
        assert!(!c.covers(press_received));
        c.mark(Instant::now());
        assert!(
            !c.covers(press_received),
            "a receive started at the same moment is not enough"
        );
        tokio::time::advance(GRACE + Duration::from_millis(1)).await;
        c.mark(Instant::now());
        assert!(c.covers(press_received));
        // Marks never go backwards.
        c.mark(press_received);
        assert!(c.covers(press_received));
    }
}
