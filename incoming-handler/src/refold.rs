//! The re-fold worker: judges again the players marked by a round or registration that arrived
//! late, a batch at a time, as soon as the timestamp consumer wakes it (and every second, for
//! marks made by other handlers). Two safety nets run less often: players registered with
//! events still waiting for a verdict (their registration and those events crossed), and the
//! expiry of events that can no longer change anything — those of names that never registered
//! (they count as rejected) and rejected ones — once everything sent before them has arrived or
//! expired from the queues (`BUTTONPARTY_PENDING_HORIZON_SECS`).

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::health::Progress;
use crate::ledger;
use crate::queue::now_ms;
use crate::stats::Stats;
use crate::store::Retrier;

/// How often the worker looks for marked players without being woken.
pub const POLL: Duration = Duration::from_secs(1);

/// How often players registered with unjudged events are looked for.
pub const UNJUDGED_EVERY: Duration = Duration::from_secs(300);

/// How often expired events are removed.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// Events removed per statement when expiring.
const EXPIRE_CHUNK: usize = 5_000;

/// The worker.
#[derive(Debug)]
pub struct RefoldWorker {
    /// Database access with retries.
    pub retrier: Retrier,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Woken when players were marked.
    pub wake: Arc<Notify>,
    /// Players per re-fold transaction.
    pub batch: usize,
    /// Events sent longer ago than this can no longer change (a bound on the queues' retention).
    pub horizon: Duration,
    /// Liveness marker for the watchdog.
    pub progress: Arc<Progress>,
}

impl RefoldWorker {
    /// Runs until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let progress = self.progress.clone();
        crate::health::within(progress, self.run_loop(stop)).await;
    }

    async fn run_loop(self, stop: CancellationToken) {
        let mut last_unjudged = Instant::now();
        let mut last_expire = Instant::now() - EXPIRE_EVERY;
        loop {
            self.progress.tick();
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            self.refold_marked(&stop).await;
            if last_unjudged.elapsed() >= UNJUDGED_EVERY {
                last_unjudged = Instant::now();
                self.judge_unjudged().await;
            }
            if last_expire.elapsed() >= EXPIRE_EVERY {
                last_expire = Instant::now();
                self.expire().await;
            }
        }
        tracing::debug!("re-fold worker stopped");
    }

    /// Re-folds marked players until none is left.
    async fn refold_marked(&self, stop: &CancellationToken) {
        let pool = self.retrier.db.pool();
        while !stop.is_cancelled() {
            self.progress.tick();
            let t = Instant::now();
            match self
                .retrier
                .run("re-fold marked players", || {
                    ledger::refold_marked(pool, self.batch, now_ms())
                })
                .await
            {
                Ok(Some(a)) => {
                    self.stats.batch(a.refolded, t.elapsed());
                    self.stats.refolded(a.refolded, a.rejudged);
                    tracing::debug!(
                        players = a.refolded,
                        rejudged = a.rejudged,
                        "players re-folded"
                    );
                }
                Ok(None) | Err(_) => return,
            }
        }
    }

    async fn judge_unjudged(&self) {
        let pool = self.retrier.db.pool();
        let Ok(list) = self
            .retrier
            .run("find unjudged events", || {
                ledger::unjudged(pool, self.batch)
            })
            .await
        else {
            return;
        };
        if list.is_empty() {
            return;
        }
        tracing::warn!(
            players = list.len(),
            "registered players with events still unjudged; judging them"
        );
        let refold: Vec<(String, Option<i64>)> =
            list.into_iter().map(|(n, t)| (n, Some(t))).collect();
        if let Ok(a) = self
            .retrier
            .run("judge unjudged events", || {
                ledger::apply(pool, &[], &[], &refold, now_ms())
            })
            .await
        {
            self.stats.refolded(a.refolded, a.rejudged);
        }
    }

    async fn expire(&self) {
        let pool = self.retrier.db.pool();
        let horizon = i64::try_from(self.horizon.as_millis()).unwrap_or(i64::MAX);
        let before = now_ms().saturating_sub(horizon);
        loop {
            match self
                .retrier
                .run("expire events", || {
                    ledger::expire(pool, before, EXPIRE_CHUNK)
                })
                .await
            {
                Ok((pending, rejected)) => {
                    if pending + rejected > 0 {
                        self.stats.expired(pending as usize);
                        tracing::info!(
                            pending_expired = pending,
                            rejected_removed = rejected,
                            "old events removed"
                        );
                    }
                    if pending < EXPIRE_CHUNK as u64 && rejected < EXPIRE_CHUNK as u64 {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
}
