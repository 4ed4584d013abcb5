//! The timestamp consumer: records each round announced by the outgoing handler (idempotent by
//! `round_id`), so that every handler instance judges presses against the same rounds.

use std::sync::Arc;
use tokio::time::Instant;

use buttonparty::messages::{RoundAnnouncement, parse_round};
use sqlx::mysql::MySqlPool;
use sqlx::{MySql, QueryBuilder};

use crate::catchup::CatchUp;
use crate::consumer::{self, Sink};
use crate::inflight::Held;
use crate::queue::{Queue, now_ms};
use crate::stats::Stats;
use crate::store::{Retrier, StoreError};

/// Inserts rounds, ignoring those already recorded. Returns how many were new.
pub async fn record_rounds(
    pool: &MySqlPool,
    rounds: &[RoundAnnouncement],
) -> Result<u64, sqlx::Error> {
    if rounds.is_empty() {
        return Ok(0);
    }
    let now = now_ms();
    let mut q = QueryBuilder::<MySql>::new(
        "INSERT IGNORE INTO rounds (round_id, opens_at_ms, closes_at_ms, recorded_at_ms) ",
    );
    q.push_values(rounds, |mut b, r| {
        b.push_bind(r.round_id.as_bytes())
            .push_bind(r.opens_at_ms)
            .push_bind(r.closes_at_ms)
            .push_bind(now);
    });
    Ok(q.build().execute(pool).await?.rows_affected())
}

/// Handles receives from the timestamp queue.
#[derive(Debug)]
pub struct RoundSink {
    /// The timestamp queue.
    pub queue: Queue,
    /// Database access with retries.
    pub retrier: Retrier,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Marked when the queue has been read up to a moment.
    pub catchup: CatchUp,
}

impl Sink for RoundSink {
    async fn handle(&self, started: Instant, asked: usize, msgs: Vec<Held>) {
        let received = msgs.len();
        let mut good = Vec::new();
        let mut held = Vec::new();
        for h in msgs {
            match parse_round(h.msg.body.as_bytes()) {
                Ok(r) => {
                    good.push(r);
                    held.push(h);
                }
                Err(reason) => consumer::dead_letter(&self.queue, &self.stats, h, &reason).await,
            }
        }
        if !good.is_empty() {
            let t = Instant::now();
            match self
                .retrier
                .run("record rounds", || {
                    record_rounds(self.retrier.db.pool(), &good)
                })
                .await
            {
                Ok(new) => {
                    self.stats.batch(good.len(), t.elapsed());
                    self.stats.applied(new as usize);
                    for r in &good {
                        tracing::info!(round_id = %r.round_id, opens_at_ms = r.opens_at_ms, closes_at_ms = r.closes_at_ms, "round recorded");
                    }
                    if (new as usize) < good.len() {
                        tracing::debug!(
                            duplicates = good.len() - new as usize,
                            "rounds already recorded"
                        );
                    }
                    consumer::delete(&self.queue, &self.stats, held).await;
                }
                Err(StoreError::Abandoned) => {
                    consumer::release(&self.queue, held).await;
                    return;
                }
                Err(StoreError::Permanent(_)) => return,
            }
        }
        if received < asked {
            self.catchup.mark(started);
        }
    }
}
