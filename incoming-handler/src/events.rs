//! The press and powerup consumers: receivers parse presses and purchases and hand them to one
//! processor, which gathers them into batches, has the ledger ([`crate::ledger`]) store and fold
//! each batch in one transaction, then deletes the messages.
//!
//! Presses and purchases go through the same batches because they are events of the same
//! players' folds: a purchase sent before a press applies to that press whichever queue delivers
//! first. Nothing is held back waiting for another queue: a press whose round or registration
//! has not arrived yet is stored (and judged again when it arrives), then deleted like any other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use buttonparty::fold::{self, Action, Event, EventId, Verdict};
use buttonparty::messages::{Malformed, parse_powerup, parse_press};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::batcher::{BatchLimits, fill};
use crate::consumer::{self, Sink};
use crate::inflight::Held;
use crate::ledger::{self, EventResult, NewEvent};
use crate::queue::{Queue, QueueKind, now_ms};
use crate::stats::Stats;
use crate::store::{Retrier, StoreError};

/// A parsed press or purchase waiting to be folded.
#[derive(Debug)]
pub struct EventItem {
    /// The message.
    pub held: Held,
    /// The queue it came from (where it is deleted).
    pub queue: QueueKind,
    /// Who.
    pub username: String,
    /// What and when.
    pub event: Event,
}

/// Parses a press or purchase message into an event at its place in send order.
pub fn parse(
    kind: QueueKind,
    body: &str,
    message_id: &str,
    sent_at_ms: i64,
) -> Result<(String, Event), Malformed> {
    let id = EventId::new(sent_at_ms, message_id);
    match kind {
        QueueKind::Powerup => {
            let p = parse_powerup(body.as_bytes())?;
            let request_key =
                fold::request_key(p.request_id.as_ref().map(|r| r.as_str()), message_id);
            Ok((
                p.username.into_inner(),
                Event {
                    id,
                    action: Action::Purchase {
                        powerup: p.powerup,
                        request_key,
                    },
                },
            ))
        }
        _ => {
            let p = parse_press(body.as_bytes())?;
            Ok((
                p.username.into_inner(),
                Event {
                    id,
                    action: Action::Press,
                },
            ))
        }
    }
}

/// Receivers' side of the press or powerup queue: parse and pass on.
#[derive(Debug)]
pub struct EventSink {
    /// The queue.
    pub queue: Queue,
    /// Counters.
    pub stats: Arc<Stats>,
    /// To the processor.
    pub tx: mpsc::Sender<EventItem>,
    /// When set, the player's identity comes from this message attribute.
    pub identity_attribute: Option<String>,
}

impl Sink for EventSink {
    async fn handle(&self, _started: Instant, _asked: usize, msgs: Vec<Held>) {
        for h in msgs {
            let parsed = crate::identity::body(self.identity_attribute.as_deref(), &h.msg)
                .and_then(|body| {
                    parse(self.queue.kind, &body, &h.msg.message_id, h.msg.sent_at_ms)
                });
            match parsed {
                Ok((username, event)) => {
                    let item = EventItem {
                        held: h,
                        queue: self.queue.kind,
                        username,
                        event,
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

/// Folds, writes and deletes presses and purchases in batches.
#[derive(Debug)]
pub struct Processor {
    /// The press and powerup queues, by kind.
    pub queues: HashMap<QueueKind, Queue>,
    /// Database access with retries.
    pub retrier: Retrier,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Batch size and linger.
    pub limits: BatchLimits,
    /// Liveness marker for the watchdog.
    pub progress: Arc<crate::health::Progress>,
    /// The held-message bound: when it is reached no more messages can come, and a batch goes
    /// without lingering.
    pub inflight: crate::inflight::InFlight,
}

/// Deletes running in the background, at most this many batches at once.
const MAX_PENDING_DELETES: usize = 4;

impl Processor {
    /// Runs until the channel is closed and drained (all receivers stopped).
    pub async fn run(self, rx: mpsc::Receiver<EventItem>) {
        let progress = self.progress.clone();
        crate::health::within(progress, self.run_loop(rx)).await;
    }

    async fn run_loop(self, mut rx: mpsc::Receiver<EventItem>) {
        let mut deletes: JoinSet<()> = JoinSet::new();
        loop {
            self.progress.tick();
            let mut batch: Vec<EventItem> = Vec::new();
            // Only the cancel-safe `recv` is raced against the timer: a batch being filled is
            // never dropped half-way (that would drop the messages it already took).
            match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(Some(first)) => {
                    batch.push(first);
                    let inflight = &self.inflight;
                    fill(&mut rx, &mut batch, self.limits, || {
                        inflight.available() > 0
                    })
                    .await;
                }
                Ok(None) => break,
                Err(_) => continue,
            }
            let (done, abandoned) = self.process(batch).await;
            self.release(abandoned).await;
            while deletes.len() >= MAX_PENDING_DELETES {
                deletes.join_next().await;
            }
            let (queues, stats) = (self.queues.clone(), self.stats.clone());
            deletes.spawn(async move {
                for (kind, msgs) in by_queue(done) {
                    if let Some(q) = queues.get(&kind) {
                        consumer::delete(q, &stats, msgs).await;
                    }
                }
            });
        }
        while deletes.join_next().await.is_some() {}
        tracing::debug!("event processor stopped");
    }

    async fn release(&self, items: Vec<EventItem>) {
        for (kind, msgs) in by_queue(items) {
            if let Some(q) = self.queues.get(&kind) {
                consumer::release(q, msgs).await;
            }
        }
    }

    /// Folds and writes one batch; splits it when a permanent error hides a bad event.
    /// Returns (to delete, to release).
    async fn process(&self, batch: Vec<EventItem>) -> (Vec<EventItem>, Vec<EventItem>) {
        let mut done = Vec::new();
        let mut abandoned = Vec::new();
        let mut work = vec![batch];
        while let Some(batch) = work.pop() {
            let inputs: Vec<NewEvent> = batch
                .iter()
                .map(|i| NewEvent {
                    username: i.username.clone(),
                    event: i.event.clone(),
                    received_at_ms: now_ms(),
                })
                .collect();
            let started = Instant::now();
            let result = self
                .retrier
                .run("event batch", || {
                    ledger::apply(self.retrier.db.pool(), &inputs, &[], &[], now_ms())
                })
                .await;
            match result {
                Ok(applied) => {
                    self.stats.batch(batch.len(), started.elapsed());
                    self.stats.refolded(applied.refolded, applied.rejudged);
                    for (item, result) in batch.iter().zip(&applied.results) {
                        self.settle(item, *result);
                    }
                    done.extend(batch);
                }
                Err(StoreError::Abandoned) => abandoned.extend(batch),
                Err(StoreError::Permanent(e)) => {
                    if batch.len() > 1 {
                        let mut a = batch;
                        let b = a.split_off(a.len() / 2);
                        work.push(a);
                        work.push(b);
                    } else {
                        for i in batch {
                            tracing::error!(queue = %i.queue, message_id = %i.held.msg.message_id, error = %e, "event cannot be written; leaving it for redelivery and, after repeated failures, the dead-letter queue");
                        }
                    }
                }
            }
        }
        (done, abandoned)
    }

    /// Counts and logs what became of one event.
    fn settle(&self, item: &EventItem, result: EventResult) {
        let msg = &item.held.msg;
        let username = item.username.as_str();
        let message_id = msg.message_id.as_str();
        match result {
            EventResult::Judged(v) => {
                self.stats.verdict(&v);
                match v {
                    Verdict::Scored {
                        round,
                        streak,
                        points,
                    } => {
                        tracing::debug!(
                            username,
                            message_id,
                            round_opens_at_ms = round.opens_at,
                            streak,
                            points,
                            "press scored"
                        )
                    }
                    Verdict::Bought { grant, price } => {
                        tracing::info!(username, message_id, powerup = %grant.powerup, price, expires_at_ms = grant.expires_at, "powerup bought")
                    }
                    other => {
                        tracing::debug!(
                            username,
                            message_id,
                            sent_at_ms = msg.sent_at_ms,
                            reason = other.as_str(),
                            "rejected"
                        )
                    }
                }
            }
            EventResult::Dropped => {
                self.stats.rejected("already_scored");
                tracing::debug!(
                    username,
                    message_id,
                    "press rejected: already scored in this round"
                );
            }
            EventResult::Pending => {
                self.stats.pending(1);
                tracing::debug!(
                    username,
                    message_id,
                    sent_at_ms = msg.sent_at_ms,
                    "kept until the name registers"
                );
            }
            EventResult::Duplicate => {
                self.stats.duplicate();
                tracing::debug!(username, message_id, "already stored (redelivered)");
            }
        }
    }
}

fn by_queue(items: Vec<EventItem>) -> HashMap<QueueKind, Vec<Held>> {
    let mut out: HashMap<QueueKind, Vec<Held>> = HashMap::new();
    for i in items {
        out.entry(i.queue).or_default().push(i.held);
    }
    out
}

/// Stops the processor's inputs: dropping every sender closes the channel.
pub fn channel(capacity: usize) -> (mpsc::Sender<EventItem>, mpsc::Receiver<EventItem>) {
    mpsc::channel(capacity.max(1))
}
