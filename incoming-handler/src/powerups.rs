//! The powerup consumer: each purchase is judged and applied atomically in its own transaction.
//! A purchase is identified by `(username, request_id)` — or by its message id without one — so a
//! client's retry or a redelivery applies once.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use buttonparty::messages::{PowerupPurchase, parse_powerup};
use buttonparty::rules::{self, Millis};
use sqlx::Row;
use sqlx::mysql::MySqlPool;

use crate::catchup::CatchUp;
use crate::consumer::{self, Sink};
use crate::inflight::Held;
use crate::queue::{Queue, now_ms};
use crate::stats::Stats;
use crate::store::{Retrier, StoreError};

/// What became of a purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseOutcome {
    /// Paid and granted.
    Applied(rules::Purchase),
    /// Judged before (same request): nothing changes.
    Duplicate,
    /// Not enough points: nothing changes.
    InsufficientPoints,
    /// The player is not registered.
    UnknownUser,
}

/// The key a purchase is deduplicated by.
pub fn request_key(purchase: &PowerupPurchase, message_id: &str) -> String {
    match &purchase.request_id {
        Some(id) => format!("req:{}", id.as_str()),
        None => format!("msg:{message_id}"),
    }
}

/// Judges and applies one purchase taking effect at `at`, in one transaction.
pub async fn apply_purchase(
    pool: &MySqlPool,
    purchase: &PowerupPurchase,
    key: &str,
    message_id: &str,
    at: Millis,
) -> Result<PurchaseOutcome, sqlx::Error> {
    let name = purchase.username.as_str().as_bytes();
    let mut tx = pool.begin().await?;
    let Some(row) = sqlx::query("SELECT score FROM users WHERE username = ? FOR UPDATE")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
    else {
        tx.rollback().await?;
        return Ok(PurchaseOutcome::UnknownUser);
    };
    let score: i64 = row.try_get(0)?;
    let seen = sqlx::query(
        "SELECT 1 FROM powerups WHERE username = ? AND request_key = ? \
         UNION ALL SELECT 1 FROM rejected_purchases WHERE username = ? AND request_key = ?",
    )
    .bind(name)
    .bind(key.as_bytes())
    .bind(name)
    .bind(key.as_bytes())
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    if seen {
        tx.rollback().await?;
        return Ok(PurchaseOutcome::Duplicate);
    }
    let outcome = match rules::judge_purchase(score, purchase.powerup, at) {
        Ok(p) => {
            sqlx::query("UPDATE users SET score = ? WHERE username = ?")
                .bind(p.new_score)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO powerups (username, request_key, kind, tier, price, starts_at_ms, \
                 expires_at_ms, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(name)
            .bind(key.as_bytes())
            .bind(p.grant.powerup.kind.as_str())
            .bind(p.grant.powerup.tier.get())
            .bind(p.price)
            .bind(p.grant.starts_at)
            .bind(p.grant.expires_at)
            .bind(message_id.as_bytes())
            .execute(&mut *tx)
            .await?;
            PurchaseOutcome::Applied(p)
        }
        Err(reject) => {
            sqlx::query(
                "INSERT INTO rejected_purchases (username, request_key, reason, judged_at_ms) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(name)
            .bind(key.as_bytes())
            .bind(reject.as_str())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            PurchaseOutcome::InsufficientPoints
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Handles receives from the powerup queue.
#[derive(Debug)]
pub struct PowerupSink {
    /// The powerup queue.
    pub queue: Queue,
    /// Database access with retries.
    pub retrier: Retrier,
    /// Counters.
    pub stats: Arc<Stats>,
    /// The add-user queue's progress: an unknown player may just not be registered yet.
    pub users: CatchUp,
    /// When set, the player's identity comes from this message attribute.
    pub identity_attribute: Option<String>,
}

impl Sink for PowerupSink {
    async fn handle(&self, _started: Instant, _asked: usize, msgs: Vec<Held>) {
        let mut done = Vec::new();
        let mut release = Vec::new();
        for h in msgs {
            let parsed = crate::identity::body(self.identity_attribute.as_deref(), &h.msg)
                .and_then(|body| parse_powerup(body.as_bytes()));
            let purchase = match parsed {
                Ok(p) => p,
                Err(reason) => {
                    consumer::dead_letter(&self.queue, &self.stats, h, &reason).await;
                    continue;
                }
            };
            let key = request_key(&purchase, &h.msg.message_id);
            let outcome = loop {
                let r = self
                    .retrier
                    .run("powerup purchase", || {
                        apply_purchase(
                            self.retrier.db.pool(),
                            &purchase,
                            &key,
                            &h.msg.message_id,
                            h.msg.sent_at_ms,
                        )
                    })
                    .await;
                match r {
                    // The player's registration may still be on its way.
                    Ok(PurchaseOutcome::UnknownUser) if !self.users.covers(h.msg.received_at) => {
                        tokio::select! {
                            _ = self.retrier.hard_stop.cancelled() => break Err(StoreError::Abandoned),
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                    other => break other,
                }
            };
            let username = purchase.username.as_str();
            let message_id = h.msg.message_id.as_str();
            match outcome {
                Ok(PurchaseOutcome::Applied(p)) => {
                    self.stats.applied(1);
                    tracing::info!(username, message_id, powerup = %p.grant.powerup, price = p.price, score = p.new_score, expires_at_ms = p.grant.expires_at, "powerup bought");
                    done.push(h);
                }
                Ok(PurchaseOutcome::Duplicate) => {
                    self.stats.rejected("duplicate_purchase");
                    tracing::debug!(username, message_id, "purchase already judged");
                    done.push(h);
                }
                Ok(PurchaseOutcome::InsufficientPoints) => {
                    self.stats.rejected("insufficient_points");
                    tracing::debug!(username, message_id, powerup = %purchase.powerup, "purchase rejected: not enough points");
                    done.push(h);
                }
                Ok(PurchaseOutcome::UnknownUser) => {
                    self.stats.rejected("unknown_user");
                    tracing::debug!(username, message_id, "purchase rejected: unknown player");
                    done.push(h);
                }
                Err(StoreError::Abandoned) => release.push(h),
                Err(StoreError::Permanent(_)) => {}
            }
        }
        consumer::delete(&self.queue, &self.stats, done).await;
        consumer::release(&self.queue, release).await;
    }
}
