//! The add-user consumer: registers a player (score 0, streak 0) if new, and brings the player's
//! push endpoint and topic subscription up to date with the token. Re-sending the same message
//! changes nothing.

use std::sync::Arc;
use tokio::time::Instant;

use buttonparty::backoff::Backoff;
use buttonparty::messages::{AddUser, parse_add_user};
use sqlx::Row;
use sqlx::mysql::MySqlPool;

use crate::catchup::CatchUp;
use crate::consumer::{self, Sink};
use crate::inflight::Held;
use crate::push::{Push, PushError, Registration};
use crate::queue::{Queue, now_ms};
use crate::stats::Stats;
use crate::store::{Retrier, StoreError};

/// Creates the player if new; returns whether it was new and the stored push registration.
pub async fn ensure_user(
    pool: &MySqlPool,
    username: &str,
) -> Result<(bool, Option<Registration>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT IGNORE INTO users (username, score, streak, created_at_ms) VALUES (?, 0, 0, ?)",
    )
    .bind(username.as_bytes())
    .bind(now_ms())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let known =
        sqlx::query("SELECT endpoint_arn, subscription_arn FROM push_endpoints WHERE username = ?")
            .bind(username.as_bytes())
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| -> Result<Registration, sqlx::Error> {
                Ok(Registration {
                    endpoint_arn: row.try_get(0)?,
                    subscription_arn: row.try_get(1)?,
                })
            })
            .transpose()?;
    tx.commit().await?;
    Ok((inserted, known))
}

/// Stores the player's push registration.
pub async fn store_registration(
    pool: &MySqlPool,
    username: &str,
    reg: &Registration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO push_endpoints (username, endpoint_arn, subscription_arn, updated_at_ms) \
         VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE endpoint_arn = VALUES(endpoint_arn), \
         subscription_arn = VALUES(subscription_arn), updated_at_ms = VALUES(updated_at_ms)",
    )
    .bind(username.as_bytes())
    .bind(&reg.endpoint_arn)
    .bind(&reg.subscription_arn)
    .bind(now_ms())
    .execute(pool)
    .await?;
    Ok(())
}

/// Handles receives from the add-user queue.
#[derive(Debug)]
pub struct UserSink {
    /// The add-user queue.
    pub queue: Queue,
    /// Database access with retries.
    pub retrier: Retrier,
    /// SNS access.
    pub push: Push,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Marked when the queue has been read up to a moment.
    pub catchup: CatchUp,
    /// When set, the player's identity comes from this message attribute.
    pub identity_attribute: Option<String>,
}

enum Outcome {
    Done,
    Release,
    Keep,
}

impl UserSink {
    async fn apply(&self, add: &AddUser, message_id: &str) -> Outcome {
        let pool = self.retrier.db.pool();
        let name = add.username.as_str();
        let (new, known) = match self
            .retrier
            .run("register player", || ensure_user(pool, name))
            .await
        {
            Ok(v) => v,
            Err(StoreError::Abandoned) => return Outcome::Release,
            Err(StoreError::Permanent(_)) => return Outcome::Keep,
        };
        if new {
            tracing::info!(username = %name, message_id, "player registered");
        } else {
            tracing::debug!(username = %name, message_id, "player already registered");
        }
        let mut delays = Backoff::default().iter();
        let registration = loop {
            match self.push.register(&add.token, known.as_ref()).await {
                Ok(r) => break Some(r),
                Err(e @ PushError::Refused(_)) => {
                    tracing::warn!(username = %name, message_id, error = %e, "push endpoint not registered; the player gets no notifications until a new token arrives");
                    break None;
                }
                Err(e) => {
                    tracing::warn!(username = %name, message_id, error = %e, "push registration failed; retrying");
                    let delay = delays.next().unwrap_or_default();
                    tokio::select! {
                        _ = self.retrier.hard_stop.cancelled() => return Outcome::Release,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        if let Some(reg) = registration
            && known.as_ref() != Some(&reg)
        {
            match self
                .retrier
                .run("store push endpoint", || {
                    store_registration(pool, name, &reg)
                })
                .await
            {
                Ok(()) => {
                    tracing::debug!(username = %name, endpoint = %reg.endpoint_arn, "push endpoint stored")
                }
                Err(StoreError::Abandoned) => return Outcome::Release,
                Err(StoreError::Permanent(_)) => return Outcome::Keep,
            }
        }
        Outcome::Done
    }
}

impl Sink for UserSink {
    async fn handle(&self, started: Instant, asked: usize, msgs: Vec<Held>) {
        let received = msgs.len();
        let mut done = Vec::new();
        let mut release = Vec::new();
        let mut all_applied = true;
        for h in msgs {
            let parsed = crate::identity::body(self.identity_attribute.as_deref(), &h.msg)
                .and_then(|body| parse_add_user(body.as_bytes()));
            match parsed {
                Err(reason) => consumer::dead_letter(&self.queue, &self.stats, h, &reason).await,
                Ok(add) => match self.apply(&add, &h.msg.message_id).await {
                    Outcome::Done => {
                        self.stats.applied(1);
                        done.push(h);
                    }
                    Outcome::Release => {
                        all_applied = false;
                        release.push(h);
                    }
                    Outcome::Keep => all_applied = false,
                },
            }
        }
        consumer::delete(&self.queue, &self.stats, done).await;
        consumer::release(&self.queue, release).await;
        if received < asked && all_applied {
            self.catchup.mark(started);
        }
    }
}
