//! The add-user consumer: registers players and keeps their push endpoints on the token of their
//! latest-sent registration.
//!
//! Each receive is applied in two steps:
//! 1. one transaction ([`ledger::apply`]) registers the new players from their message's send
//!    time (judging the presses and purchases they sent meanwhile), moves a registration that was
//!    sent earlier than the known one, and stores each message's push token if it was sent after
//!    the stored one;
//! 2. per player, concurrently (bounded), the SNS endpoint is brought to the stored token —
//!    create, read attributes, update and re-enable, subscribe once, as AWS's token-management
//!    guide says — and the endpoint is stored if the token is still the latest (else it is done
//!    again with the newer one). A redelivered or older registration changes nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::time::Instant;

use buttonparty::backoff::Backoff;
use buttonparty::fold::EventId;
use buttonparty::messages::{PushToken, parse_add_user};
use futures::StreamExt as _;
use sqlx::Row;
use sqlx::mysql::MySqlPool;

use crate::consumer::{self, Sink};
use crate::inflight::Held;
use crate::ledger::{self, NewRegistration};
use crate::push::{Push, PushError, Registration};
use crate::queue::{Queue, now_ms};
use crate::stats::Stats;
use crate::store::{Retrier, StoreError};

/// A player's stored push registration and the token it must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The latest-sent registration's token.
    pub token: Option<String>,
    /// Its send time and message id.
    pub token_at: (i64, String),
    /// The endpoint and subscription, once created.
    pub registration: Option<Registration>,
}

/// Reads a player's stored push registration.
pub async fn stored(pool: &MySqlPool, username: &str) -> Result<Option<Stored>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT token, token_sent_at_ms, token_msg_id, endpoint_arn, subscription_arn \
         FROM push_endpoints WHERE username = ?",
    )
    .bind(username.as_bytes())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let token: Option<Vec<u8>> = row.try_get(0)?;
    let msg: Vec<u8> = row.try_get(2)?;
    let endpoint: Option<String> = row.try_get(3)?;
    Ok(Some(Stored {
        token: token.map(|t| String::from_utf8_lossy(&t).into_owned()),
        token_at: (row.try_get(1)?, String::from_utf8_lossy(&msg).into_owned()),
        registration: endpoint.map(|endpoint_arn| Registration {
            endpoint_arn,
            subscription_arn: row.try_get(4).ok().flatten(),
        }),
    }))
}

/// Stores the endpoint made for the token sent at `token_at`, if that is still the latest token.
/// Returns false when a newer token arrived meanwhile.
pub async fn store_endpoint(
    pool: &MySqlPool,
    username: &str,
    token_at: &(i64, String),
    reg: &Registration,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE push_endpoints SET endpoint_arn = ?, subscription_arn = ?, updated_at_ms = ? \
         WHERE username = ? AND token_sent_at_ms = ? AND token_msg_id = ?",
    )
    .bind(&reg.endpoint_arn)
    .bind(&reg.subscription_arn)
    .bind(now_ms())
    .bind(username.as_bytes())
    .bind(token_at.0)
    .bind(token_at.1.as_bytes())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
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
    /// When set, the player's identity comes from this message attribute.
    pub identity_attribute: Option<String>,
    /// Players whose endpoints are brought up to date at once (per receive).
    pub push_concurrency: usize,
}

/// Why a player's endpoint was not brought up to date.
enum SyncOutcome {
    /// Up to date (or SNS refused the token for good: logged).
    Done,
    /// The drain deadline passed: release the messages.
    Release,
    /// A permanent database error: leave the messages for redelivery.
    Keep,
}

impl UserSink {
    /// Brings `username`'s endpoint to its latest token.
    async fn sync(&self, username: &str) -> SyncOutcome {
        let pool = self.retrier.db.pool();
        loop {
            let stored = match self
                .retrier
                .run("read push endpoint", || stored(pool, username))
                .await
            {
                Ok(Some(s)) => s,
                Ok(None) => return SyncOutcome::Done,
                Err(StoreError::Abandoned) => return SyncOutcome::Release,
                Err(StoreError::Permanent(_)) => return SyncOutcome::Keep,
            };
            let Some(token) = stored.token.clone().and_then(|t| PushToken::parse(t).ok()) else {
                return SyncOutcome::Done;
            };
            let mut delays = Backoff::default().iter();
            let reg = loop {
                match self
                    .push
                    .register(&token, stored.registration.as_ref())
                    .await
                {
                    Ok(r) => break r,
                    Err(e @ PushError::Refused(_)) => {
                        tracing::warn!(username, error = %e, "push endpoint not registered; the player gets no notifications until a new token arrives");
                        return SyncOutcome::Done;
                    }
                    Err(e) => {
                        tracing::warn!(username, error = %e, "push registration failed; retrying");
                        let delay = delays.next().unwrap_or_default();
                        tokio::select! {
                            _ = self.retrier.hard_stop.cancelled() => return SyncOutcome::Release,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            };
            if stored.registration.as_ref() == Some(&reg) {
                return SyncOutcome::Done;
            }
            match self
                .retrier
                .run("store push endpoint", || {
                    store_endpoint(pool, username, &stored.token_at, &reg)
                })
                .await
            {
                Ok(true) => {
                    tracing::debug!(username, endpoint = %reg.endpoint_arn, "push endpoint stored");
                    return SyncOutcome::Done;
                }
                Ok(false) => {
                    // A newer token arrived meanwhile: bring the endpoint to it. An endpoint made
                    // here that is not the stored one is removed.
                    tracing::debug!(username, "a newer push token arrived; syncing again");
                    if stored
                        .registration
                        .as_ref()
                        .is_none_or(|r| r.endpoint_arn != reg.endpoint_arn)
                    {
                        self.push.remove(&reg).await;
                    }
                }
                Err(StoreError::Abandoned) => return SyncOutcome::Release,
                Err(StoreError::Permanent(_)) => return SyncOutcome::Keep,
            }
        }
    }
}

impl Sink for UserSink {
    async fn handle(&self, _started: Instant, _asked: usize, msgs: Vec<Held>) {
        let mut good: Vec<(Held, NewRegistration)> = Vec::new();
        for h in msgs {
            let parsed = crate::identity::body(self.identity_attribute.as_deref(), &h.msg)
                .and_then(|body| parse_add_user(body.as_bytes()));
            match parsed {
                Err(reason) => consumer::dead_letter(&self.queue, &self.stats, h, &reason).await,
                Ok(add) => {
                    let reg = NewRegistration {
                        username: add.username.into_inner(),
                        id: EventId::new(h.msg.sent_at_ms, h.msg.message_id.clone()),
                        token: add.token.expose().to_owned(),
                    };
                    good.push((h, reg));
                }
            }
        }
        if good.is_empty() {
            return;
        }
        let regs: Vec<NewRegistration> = good.iter().map(|(_, r)| r.clone()).collect();
        let started = Instant::now();
        let applied = match self
            .retrier
            .run("register players", || {
                ledger::apply(self.retrier.db.pool(), &[], &regs, &[], now_ms())
            })
            .await
        {
            Ok(a) => a,
            Err(StoreError::Abandoned) => {
                consumer::release(&self.queue, good.into_iter().map(|(h, _)| h).collect()).await;
                return;
            }
            Err(StoreError::Permanent(_)) => return,
        };
        self.stats.batch(regs.len(), started.elapsed());
        self.stats.refolded(applied.refolded, applied.rejudged);
        for (i, (h, r)) in good.iter().enumerate() {
            if applied.created[i] {
                tracing::info!(username = %r.username, message_id = %h.msg.message_id, "player registered");
            } else {
                tracing::debug!(username = %r.username, message_id = %h.msg.message_id, "player already registered");
            }
        }
        self.stats.applied(good.len());

        // Endpoints, one sync per player, a few players at once.
        let names: BTreeSet<String> = good.iter().map(|(_, r)| r.username.clone()).collect();
        let outcomes: HashMap<String, SyncOutcome> = futures::stream::iter(names)
            .map(|name| async move {
                let outcome = self.sync(&name).await;
                (name, outcome)
            })
            .buffer_unordered(self.push_concurrency.max(1))
            .collect()
            .await;
        let mut done = Vec::new();
        let mut release = Vec::new();
        for (h, r) in good {
            match outcomes.get(&r.username) {
                Some(SyncOutcome::Done) => done.push(h),
                Some(SyncOutcome::Release) => release.push(h),
                _ => {}
            }
        }
        consumer::delete(&self.queue, &self.stats, done).await;
        consumer::release(&self.queue, release).await;
    }
}
