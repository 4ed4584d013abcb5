//! The receive loop shared by the four queue consumers, and what every consumer does with a
//! message once judged: delete it (applied or rejected), dead-letter it (malformed), or release
//! it (not applied before the drain deadline).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use buttonparty::backoff::Backoff;
use buttonparty::messages::Malformed;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::inflight::{Held, InFlight};
use crate::queue::{Message, Queue};
use crate::stats::Stats;

/// Messages asked for per receive (SQS's largest).
pub const RECEIVE_BATCH: u32 = 10;

/// What a consumer does with the messages of one receive.
pub trait Sink: Send + Sync + 'static {
    /// Handles the messages of a receive that started at `started` and asked for `asked`
    /// messages (`msgs` may be empty). Must delete, dead-letter, release or keep each one.
    fn handle(
        &self,
        started: Instant,
        asked: usize,
        msgs: Vec<Held>,
    ) -> impl Future<Output = ()> + Send;
}

/// One receiver of one queue.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// The queue.
    pub queue: Queue,
    /// Held-message registry and bound.
    pub inflight: InFlight,
    /// Database health: no receiving while unhealthy.
    pub health: Health,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Long-poll wait.
    pub wait: Duration,
    /// Messages per receive (1–10).
    pub batch: u32,
    /// Delay policy after a failed receive.
    pub backoff: Backoff,
    /// Progress marker for the watchdog.
    pub progress: Arc<crate::health::Progress>,
    /// Cancelled at the drain deadline: a receive still outstanding then is abandoned.
    pub hard_stop: CancellationToken,
    /// Where messages received while stopping wait to be released.
    pub returned: Returned,
}

/// Messages received while the handler stops, released together once every receiver has
/// stopped. Released one receive at a time, a message would at once be received again by another
/// receiver's outstanding long poll, and released again: every receive counts towards the
/// queue's `maxReceiveCount`, and a few quick round trips sent valid presses to the dead-letter
/// queue.
#[derive(Debug, Clone, Default)]
pub struct Returned(Arc<std::sync::Mutex<Vec<Parked>>>);

/// Messages of one receive, with their queue.
type Parked = (Queue, Vec<Message>);

impl Returned {
    /// Keeps `msgs` of `queue` until [`Returned::release_all`].
    pub fn park(&self, queue: &Queue, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        if let Ok(mut parked) = self.0.lock() {
            parked.push((queue.clone(), msgs));
        }
    }

    /// Makes every parked message visible again (call when no receiver is left).
    pub async fn release_all(&self) {
        let parked = self
            .0
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        for (queue, msgs) in parked {
            release_messages(&queue, &msgs).await;
            tracing::info!(queue = %queue.kind, messages = msgs.len(), "released messages received while stopping");
        }
    }
}

impl Receiver {
    /// Receives until `stop` is cancelled, handing each receive's messages to `sink`.
    ///
    /// A long poll outstanding when `stop` is cancelled is not abandoned (the queue would still
    /// hand it messages, which would then stay invisible for the visibility timeout): it is let
    /// finish, up to the drain deadline (`hard_stop`), and what it returns is parked in
    /// [`Returned`], to be released when every receiver has stopped.
    pub async fn run<S: Sink>(self, sink: Arc<S>, stop: CancellationToken) {
        let mut delays = self.backoff.iter();
        let mut failing = false;
        loop {
            self.progress.tick();
            if stop.is_cancelled() {
                break;
            }
            if !self.health.is_healthy() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::timeout(Duration::from_secs(1), self.health.wait_healthy()) => continue,
                }
            }
            // Receive only while messages may be held; the room is taken for what the receive
            // returns, so that a long poll on an empty queue holds no room meanwhile.
            tokio::select! {
                _ = stop.cancelled() => break,
                r = tokio::time::timeout(Duration::from_secs(1), self.inflight.wait_room()) => if r.is_err() { continue },
            }
            let started = Instant::now();
            let received = tokio::select! {
                _ = self.hard_stop.cancelled() => break,
                r = self.queue.receive(self.batch as i32, self.wait) => r,
            };
            let received = match received {
                Ok(msgs) => {
                    let n = msgs.len() as u32;
                    let permits = tokio::select! {
                        _ = self.hard_stop.cancelled() => {
                            self.returned.park(&self.queue, msgs);
                            break;
                        }
                        p = self.inflight.reserve(n) => p,
                    };
                    Ok((msgs, permits))
                }
                Err(e) => Err(e),
            };
            match received {
                Ok((msgs, permits)) => {
                    if failing {
                        tracing::info!(queue = %self.queue.kind, "queue reachable again");
                        failing = false;
                    }
                    delays.reset();
                    self.stats.received(self.queue.kind, msgs.len());
                    for m in msgs.iter().filter(|m| m.receive_count > 1) {
                        self.stats.redelivered();
                        tracing::debug!(queue = %self.queue.kind, message_id = %m.message_id, receive_count = m.receive_count, "redelivered message");
                    }
                    if stop.is_cancelled() {
                        // Received while stopping: back to the queue for the next handler, once
                        // no receiver of this process is left to take it again.
                        drop(permits);
                        self.returned.park(&self.queue, msgs);
                        break;
                    }
                    let held = self.inflight.hold(self.queue.kind, msgs, permits);
                    crate::health::within(
                        self.progress.clone(),
                        sink.handle(started, self.batch as usize, held),
                    )
                    .await;
                }
                Err(e) => {
                    let delay = delays.next().unwrap_or(self.backoff.max);
                    if !failing {
                        tracing::warn!(queue = %self.queue.kind, error = %e, "receive failed; backing off");
                        failing = true;
                    } else {
                        tracing::debug!(queue = %self.queue.kind, error = %e, retry_in_ms = delay.as_millis() as u64, "receive failed again");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::debug!(queue = %self.queue.kind, "receiver stopped");
    }
}

/// `DeleteMessageBatch` calls (10 messages each) of one [`delete`] in flight at once.
pub const DELETE_CONCURRENCY: usize = 4;

/// Deletes messages that were applied or rejected, ten per `DeleteMessageBatch`, a few calls at
/// once; each ten is forgotten (its in-flight permits returned to the receivers) as soon as its
/// call succeeded, so that a large batch does not hold the receivers back until its last call.
/// A refused entry (stale receipt handle: the message was redelivered meanwhile) is counted and
/// logged; the redelivery is harmless because applying is idempotent.
pub async fn delete(queue: &Queue, stats: &Stats, msgs: Vec<Held>) {
    if msgs.is_empty() {
        return;
    }
    let mut tens: Vec<Vec<Held>> = Vec::with_capacity(msgs.len().div_ceil(10));
    for h in msgs {
        match tens.last_mut() {
            Some(last) if last.len() < 10 => last.push(h),
            _ => tens.push(vec![h]),
        }
    }
    futures::stream::iter(tens)
        .for_each_concurrent(DELETE_CONCURRENCY, |ten| delete_ten(queue, stats, ten))
        .await;
}

/// One `DeleteMessageBatch` of up to ten messages, retried with backoff.
async fn delete_ten(queue: &Queue, stats: &Stats, msgs: Vec<Held>) {
    let entries: Vec<(&str, &str)> = msgs
        .iter()
        .map(|h| (h.msg.message_id.as_str(), h.msg.receipt_handle.as_str()))
        .collect();
    let mut delays = Backoff::default().iter();
    for attempt in 1..=5 {
        match queue.delete(&entries).await {
            Ok(outcome) => {
                if !outcome.failed.is_empty() {
                    stats.delete_failed(outcome.failed.len());
                    for (id, code) in &outcome.failed {
                        tracing::warn!(queue = %queue.kind, message_id = %id, code = %code, "delete refused (stale receipt handle?); a redelivery will be recognised as a duplicate");
                    }
                }
                return;
            }
            Err(e) => {
                tracing::warn!(queue = %queue.kind, error = %e, attempt, "delete failed; retrying");
                tokio::time::sleep(delays.next().unwrap_or_default()).await;
            }
        }
    }
    tracing::warn!(queue = %queue.kind, messages = entries.len(), "could not delete applied messages; their redelivery will be recognised as duplicates");
}

/// Makes received messages visible again at once, before they were held.
async fn release_messages(queue: &Queue, msgs: &[crate::queue::Message]) {
    let receipts: Vec<&str> = msgs.iter().map(|m| m.receipt_handle.as_str()).collect();
    if !receipts.is_empty() {
        let _ = queue.set_visibility(&receipts, Duration::ZERO).await;
    }
}

/// Makes messages visible again at once (drain deadline reached before they were applied).
pub async fn release(queue: &Queue, msgs: Vec<Held>) {
    if msgs.is_empty() {
        return;
    }
    let receipts: Vec<&str> = msgs.iter().map(|h| h.msg.receipt_handle.as_str()).collect();
    match queue.set_visibility(&receipts, Duration::ZERO).await {
        Ok(_) => {
            tracing::info!(queue = %queue.kind, messages = receipts.len(), "released unapplied messages for redelivery")
        }
        Err(e) => {
            tracing::warn!(queue = %queue.kind, error = %e, "could not release messages; they reappear after the visibility timeout")
        }
    }
}

/// A malformed message: logged at warn level with its id and reason (never its body or token),
/// copied to the dead-letter queue with the reason, then deleted. If the copy fails the message
/// is kept (it will be redelivered and tried again), so nothing is lost.
pub async fn dead_letter(queue: &Queue, stats: &Stats, held: Held, reason: &Malformed) {
    stats.malformed();
    tracing::warn!(
        queue = %queue.kind,
        message_id = %held.msg.message_id,
        reason = %reason,
        code = reason.code(),
        "malformed message: moving it to the dead-letter queue"
    );
    match queue.dead_letter(&held.msg, reason).await {
        Ok(_) => delete(queue, stats, vec![held]).await,
        Err(e) => {
            tracing::warn!(queue = %queue.kind, message_id = %held.msg.message_id, error = %e, "could not copy the malformed message to the dead-letter queue; it will be retried");
        }
    }
}
