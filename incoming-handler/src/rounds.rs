//! The timestamp consumer: records each round announced by the outgoing handler (idempotent by
//! `round_id`), then marks for a re-fold every player with an event folded at or after the
//! round's opening — a round learnt late changes which round those presses belong to and what
//! the streaks are — and wakes the re-fold worker ([`crate::refold`]). The message is deleted
//! once both are committed; a redelivery records nothing new and marks again (idempotent).

use std::sync::Arc;
use tokio::time::Instant;

use buttonparty::messages::parse_round;
use buttonparty::rules::Round;
use tokio::sync::Notify;

use crate::consumer::{self, Sink};
use crate::inflight::Held;
use crate::ledger;
use crate::queue::{Queue, now_ms};
use crate::stats::Stats;
use crate::store::{Retrier, StoreError};

/// Players marked per statement.
const MARK_CHUNK: usize = 5_000;

/// Handles receives from the timestamp queue.
#[derive(Debug)]
pub struct RoundSink {
    /// The timestamp queue.
    pub queue: Queue,
    /// Database access with retries.
    pub retrier: Retrier,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Wakes the re-fold worker.
    pub refold: Arc<Notify>,
}

impl Sink for RoundSink {
    async fn handle(&self, _started: Instant, _asked: usize, msgs: Vec<Held>) {
        let mut done = Vec::new();
        for h in msgs {
            let r = match parse_round(h.msg.body.as_bytes()) {
                Ok(r) => r,
                Err(reason) => {
                    consumer::dead_letter(&self.queue, &self.stats, h, &reason).await;
                    continue;
                }
            };
            let round = Round::announced(r.opens_at_ms, r.closes_at_ms, Some(r.window()));
            let pool = self.retrier.db.pool();
            let t = Instant::now();
            let recorded = self
                .retrier
                .run("record round", || {
                    ledger::record_round(pool, &r.round_id, &round, now_ms())
                })
                .await;
            let new = match recorded {
                Ok(new) => new,
                Err(StoreError::Abandoned) => {
                    consumer::release(&self.queue, vec![h]).await;
                    continue;
                }
                Err(StoreError::Permanent(_)) => continue,
            };
            let marked = match self
                .retrier
                .run("mark players for a re-fold", || {
                    ledger::mark_round(pool, round.opens_at, MARK_CHUNK)
                })
                .await
            {
                Ok(n) => n,
                Err(StoreError::Abandoned) => {
                    consumer::release(&self.queue, vec![h]).await;
                    continue;
                }
                Err(StoreError::Permanent(_)) => continue,
            };
            self.stats.batch(1, t.elapsed());
            if new {
                self.stats.applied(1);
                tracing::info!(round_id = %r.round_id, opens_at_ms = r.opens_at_ms, closes_at_ms = r.closes_at_ms, window_ms = round.window, players_to_refold = marked, "round recorded");
            } else {
                self.stats.duplicate();
                tracing::debug!(round_id = %r.round_id, players_to_refold = marked, "round already recorded");
            }
            if marked > 0 {
                self.refold.notify_one();
            }
            done.push(h);
        }
        consumer::delete(&self.queue, &self.stats, done).await;
    }
}
