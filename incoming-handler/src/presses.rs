//! The press consumer: receivers parse presses and hand them to one processor, which gathers
//! them into batches, has the batch writer judge and write each batch in one transaction, then
//! deletes the messages.
//!
//! A press whose rejection may be caused by something not read yet — its round's timestamp
//! message or its player's registration — is held back (not deleted) until that queue has been
//! read past the moment the press was received, then judged again. So a press is never rejected
//! because its round's message arrived after it.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use buttonparty::messages::{Username, parse_press};
use buttonparty::rules::RejectReason;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::batch_writer::{PressInput, Verdict, apply_presses};
use crate::batcher::{BatchLimits, fill};
use crate::catchup::CatchUp;
use crate::consumer::{self, Sink};
use crate::inflight::Held;
use crate::queue::Queue;
use crate::stats::Stats;
use crate::store::{Retrier, StoreError};

/// A parsed press waiting to be judged.
#[derive(Debug)]
pub struct PressItem {
    /// The message.
    pub held: Held,
    /// Who pressed.
    pub username: Username,
}

/// Receivers' side: parse and pass on.
#[derive(Debug)]
pub struct PressSink {
    /// The press queue.
    pub queue: Queue,
    /// Counters.
    pub stats: Arc<Stats>,
    /// To the processor.
    pub tx: mpsc::Sender<PressItem>,
    /// When set, the player's identity comes from this message attribute.
    pub identity_attribute: Option<String>,
}

impl Sink for PressSink {
    async fn handle(&self, _started: Instant, _asked: usize, msgs: Vec<Held>) {
        for h in msgs {
            let parsed = crate::identity::body(self.identity_attribute.as_deref(), &h.msg)
                .and_then(|body| parse_press(body.as_bytes()));
            match parsed {
                Ok(p) => {
                    let item = PressItem {
                        held: h,
                        username: p.username,
                    };
                    if self.tx.send(item).await.is_err() {
                        // The processor is gone (shutting down): the message reappears later.
                        return;
                    }
                }
                Err(reason) => consumer::dead_letter(&self.queue, &self.stats, h, &reason).await,
            }
        }
    }
}

/// What a deferred press waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Rounds,
    Users,
}

/// Judges, writes and deletes presses in batches.
#[derive(Debug)]
pub struct PressProcessor {
    /// The press queue.
    pub queue: Queue,
    /// Database access with retries.
    pub retrier: Retrier,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Batch size and linger.
    pub limits: BatchLimits,
    /// Progress of the timestamp queue.
    pub rounds: CatchUp,
    /// Progress of the add-user queue.
    pub users: CatchUp,
    /// Liveness marker for the watchdog.
    pub progress: Arc<crate::Progress>,
}

/// Deletes running in the background, at most this many batches at once.
const MAX_PENDING_DELETES: usize = 4;

impl PressProcessor {
    /// Runs until the channel is closed and drained (all receivers stopped).
    pub async fn run(self, mut rx: mpsc::Receiver<PressItem>) {
        let mut deferred: Vec<(PressItem, Waiting)> = Vec::new();
        let mut deletes: JoinSet<()> = JoinSet::new();
        let mut open = true;
        loop {
            self.progress.tick();
            let mut batch: Vec<PressItem> = Vec::new();
            if open {
                let wait = if deferred.is_empty() {
                    Duration::from_secs(1)
                } else {
                    Duration::from_millis(100)
                };
                // Only the cancel-safe `recv` is raced against the timer: a batch being filled is
                // never dropped half-way (that would drop the presses it already took).
                match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(Some(first)) => {
                        batch.push(first);
                        fill(&mut rx, &mut batch, self.limits).await;
                    }
                    Ok(None) => open = false,
                    Err(_) => {}
                }
            }
            // Deferred presses whose reason to wait is gone join the batch.
            let mut still = Vec::with_capacity(deferred.len());
            for (item, waiting) in deferred.drain(..) {
                let ready = match waiting {
                    Waiting::Rounds => self.rounds.covers(item.held.msg.received_at),
                    Waiting::Users => self.users.covers(item.held.msg.received_at),
                };
                if ready && batch.len() < self.limits.max {
                    batch.push(item);
                } else {
                    still.push((item, waiting));
                }
            }
            deferred = still;
            if !open {
                // Shutting down: nothing new will come, and the queues the deferred presses wait
                // for are no longer read. Release them for the next handler.
                if batch.is_empty() {
                    let rest: Vec<Held> = deferred.drain(..).map(|(i, _)| i.held).collect();
                    consumer::release(&self.queue, rest).await;
                    break;
                }
            }
            if batch.is_empty() {
                continue;
            }
            let (done, wait, abandoned) = self.process(batch).await;
            self.stats.deferred(wait.len());
            deferred.extend(wait);
            consumer::release(&self.queue, abandoned).await;
            while deletes.len() >= MAX_PENDING_DELETES {
                deletes.join_next().await;
            }
            let (queue, stats) = (self.queue.clone(), self.stats.clone());
            deletes.spawn(async move { consumer::delete(&queue, &stats, done).await });
        }
        while deletes.join_next().await.is_some() {}
        tracing::debug!("press processor stopped");
    }

    /// Judges and writes one batch; splits it when a permanent error hides a bad press.
    /// Returns (to delete, to defer, to release).
    async fn process(
        &self,
        batch: Vec<PressItem>,
    ) -> (Vec<Held>, Vec<(PressItem, Waiting)>, Vec<Held>) {
        let mut done = Vec::new();
        let mut wait = Vec::new();
        let mut abandoned = Vec::new();
        let mut work = vec![batch];
        while let Some(batch) = work.pop() {
            let inputs: Vec<PressInput<'_>> = batch
                .iter()
                .map(|i| PressInput {
                    username: i.username.as_str(),
                    press_at: i.held.msg.sent_at_ms,
                    message_id: &i.held.msg.message_id,
                })
                .collect();
            let started = Instant::now();
            let result = self
                .retrier
                .run("press batch", || {
                    apply_presses(self.retrier.db.pool(), &inputs)
                })
                .await;
            drop(inputs);
            match result {
                Ok(verdicts) => {
                    self.stats.batch(batch.len(), started.elapsed());
                    for (item, verdict) in batch.into_iter().zip(verdicts) {
                        match self.settle(&item, verdict) {
                            None => done.push(item.held),
                            Some(w) => wait.push((item, w)),
                        }
                    }
                }
                Err(StoreError::Abandoned) => {
                    abandoned.extend(batch.into_iter().map(|i| i.held));
                }
                Err(StoreError::Permanent(e)) => {
                    if batch.len() > 1 {
                        let mut a = batch;
                        let b = a.split_off(a.len() / 2);
                        work.push(a);
                        work.push(b);
                    } else {
                        for i in batch {
                            tracing::error!(message_id = %i.held.msg.message_id, error = %e, "press cannot be written; leaving it for redelivery and, after repeated failures, the dead-letter queue");
                        }
                    }
                }
            }
        }
        (done, wait, abandoned)
    }

    /// Counts and logs a verdict; returns what the press must wait for, if its rejection is not
    /// final yet.
    fn settle(&self, item: &PressItem, verdict: Verdict) -> Option<Waiting> {
        let msg = &item.held.msg;
        match verdict {
            Verdict::Scored(s) => {
                self.stats.applied(1);
                tracing::debug!(username = %item.username, message_id = %msg.message_id, round_opens_at_ms = s.round.opens_at, streak = s.new_streak, points = s.points, "press scored");
                None
            }
            Verdict::Rejected(reason) => {
                let waiting = if reason == RejectReason::UnknownUser {
                    (!self.users.covers(msg.received_at)).then_some(Waiting::Users)
                } else if reason.may_depend_on_unknown_round() {
                    (!self.rounds.covers(msg.received_at)).then_some(Waiting::Rounds)
                } else {
                    None
                };
                if waiting.is_none() {
                    self.stats.rejected(reason.as_str());
                    tracing::debug!(username = %item.username, message_id = %msg.message_id, press_at_ms = msg.sent_at_ms, reason = reason.as_str(), "press rejected");
                }
                waiting
            }
        }
    }
}

/// Stops the processor's inputs: dropping every sender closes the channel.
pub fn channel(capacity: usize) -> (mpsc::Sender<PressItem>, mpsc::Receiver<PressItem>) {
    mpsc::channel(capacity.max(1))
}
