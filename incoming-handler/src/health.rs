//! Whether the database is usable (receivers stop taking new messages while it is not, and
//! resume by themselves once a transaction succeeds again), and whether every loop of the handler
//! still goes round (for the systemd watchdog).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Liveness of one loop: the loop ticks it each time it goes round.
#[derive(Debug)]
pub struct Progress {
    origin: Instant,
    last: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// The loop went round.
    pub fn tick(&self) {
        self.last
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last tick.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

tokio::task_local! {
    /// The progress of the loop the current task runs for.
    static CURRENT: Arc<Progress>;
}

/// Runs `f` on behalf of the loop whose progress is `progress`: code deep inside it (a
/// transaction being retried through a database outage) marks that loop alive with
/// [`tick_current`].
pub async fn within<F: std::future::Future>(progress: Arc<Progress>, f: F) -> F::Output {
    CURRENT.scope(progress, f).await
}

/// Marks the loop the current task runs for (see [`within`]) as alive; nothing outside one.
pub fn tick_current() {
    let _ = CURRENT.try_with(|p| p.tick());
}

/// Every loop of the handler, by name: the watchdog is fed only while each of them goes round,
/// so that one hung loop (a receiver stuck in a call, the processor stuck in a transaction) is
/// noticed even while the others are fine.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    loops: Arc<Mutex<Vec<NamedLoop>>>,
}

/// A loop's name and its progress.
type NamedLoop = (String, Arc<Progress>);

impl Liveness {
    /// A new loop named `name`, counted as having just gone round.
    pub fn register(&self, name: impl Into<String>) -> Arc<Progress> {
        let p = Arc::new(Progress::default());
        p.tick();
        if let Ok(mut loops) = self.loops.lock() {
            loops.push((name.into(), p.clone()));
        }
        p
    }

    /// The loop that went round longest ago, and how long ago.
    pub fn stalest(&self) -> Option<(String, Duration)> {
        let loops = self.loops.lock().ok()?;
        loops
            .iter()
            .map(|(n, p)| (n.clone(), p.age()))
            .max_by_key(|(_, age)| *age)
    }
}

/// A shared flag: database healthy or not.
#[derive(Debug, Clone)]
pub struct Health {
    tx: watch::Sender<bool>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Starts healthy.
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(true),
        }
    }

    /// Records the database's state; logs transitions.
    pub fn set(&self, healthy: bool) {
        let changed = self.tx.send_if_modified(|h| {
            let changed = *h != healthy;
            *h = healthy;
            changed
        });
        if changed {
            if healthy {
                tracing::info!("database reachable again: receiving resumes");
            } else {
                tracing::warn!(
                    "database unavailable: receiving paused, held messages kept invisible"
                );
            }
            buttonparty::notify::status(if healthy {
                "running"
            } else {
                "database unavailable, retrying"
            });
        }
    }

    /// Whether the database is healthy now.
    pub fn is_healthy(&self) -> bool {
        *self.tx.borrow()
    }

    /// Waits until the database is healthy.
    pub async fn wait_healthy(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|h| *h).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_stalest_loop_is_the_one_that_stopped_going_round() {
        let l = Liveness::default();
        let a = l.register("receiver press#1");
        let b = l.register("processor");
        tokio::time::advance(Duration::from_secs(10)).await;
        a.tick();
        tokio::time::advance(Duration::from_secs(5)).await;
        let (name, age) = l.stalest().unwrap();
        assert_eq!(name, "processor");
        assert_eq!(age, Duration::from_secs(15));
        b.tick();
        assert_eq!(
            l.stalest().unwrap(),
            ("receiver press#1".to_owned(), Duration::from_secs(5))
        );
        // Work done on behalf of a loop keeps it alive.
        tokio::time::advance(Duration::from_secs(5)).await;
        within(a.clone(), async { tick_current() }).await;
        assert_eq!(a.age(), Duration::ZERO);
        tick_current(); // outside any loop: nothing to mark, no panic
    }

    #[tokio::test]
    async fn waiters_resume_when_healthy_again() {
        let h = Health::new();
        h.set(false);
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.wait_healthy().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        h.set(true);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
