//! Messages held by the handler between receive and delete/release.
//!
//! * A bound on how many messages are held at once (receivers take permits before receiving).
//! * A registry of held receipt handles; the heartbeat task extends the visibility of every
//!   message held longer than half its queue's visibility timeout, so a slow batch or a database
//!   outage never lets a held message reappear (or drift to the dead-letter queue).
//!
//! Holding is RAII: a [`Held`] value removes itself from the registry and returns its permit when
//! dropped, whatever path the message took.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::queue::{Message, Queue, QueueKind};
use crate::stats::Stats;

#[derive(Debug)]
struct Entry {
    kind: QueueKind,
    extended_at: Instant,
}

/// The registry of held messages and the bound on their number.
#[derive(Clone)]
pub struct InFlight {
    permits: Arc<Semaphore>,
    held: Arc<Mutex<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("available", &self.permits.available_permits())
            .field("held", &self.len())
            .finish()
    }
}

/// Permits for messages about to be received.
#[derive(Debug)]
pub struct Permits(OwnedSemaphorePermit);

/// One held message: the message and its registration. Dropping it forgets the message.
#[derive(Debug)]
pub struct Held {
    /// The message.
    pub msg: Message,
    registry: Arc<Mutex<HashMap<String, Entry>>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut held) = self.registry.lock() {
            held.remove(&self.msg.receipt_handle);
        }
    }
}

impl InFlight {
    /// A registry allowing at most `max` held messages.
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            held: Arc::default(),
        }
    }

    /// Waits until at least one more message may be held (without taking the room: a receive
    /// on an empty queue must not keep others from receiving for its whole long poll).
    pub async fn wait_room(&self) {
        drop(
            self.permits
                .acquire()
                .await
                .expect("the semaphore is never closed"),
        );
    }

    /// Waits for room for `n` more messages.
    pub async fn reserve(&self, n: u32) -> Permits {
        Permits(
            self.permits
                .clone()
                .acquire_many_owned(n)
                .await
                .expect("the semaphore is never closed"),
        )
    }

    /// Registers received messages, moving one permit from `permits` to each.
    pub fn hold(&self, kind: QueueKind, msgs: Vec<Message>, mut permits: Permits) -> Vec<Held> {
        let now = Instant::now();
        let mut held = self.held.lock().expect("registry lock");
        msgs.into_iter()
            .map(|msg| {
                held.insert(
                    msg.receipt_handle.clone(),
                    Entry {
                        kind,
                        extended_at: now,
                    },
                );
                let permit = permits.0.split(1);
                Held {
                    msg,
                    registry: self.held.clone(),
                    _permit: permit,
                }
            })
            .collect()
    }

    /// Permits free now: how many more messages could be received.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Number of held messages.
    pub fn len(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Receipt handles of `kind` held since their last extension for at least `age`; marks them
    /// extended now.
    fn due(&self, kind: QueueKind, age: Duration) -> Vec<String> {
        let now = Instant::now();
        let mut held = self.held.lock().expect("registry lock");
        held.iter_mut()
            .filter(|(_, e)| e.kind == kind && now.duration_since(e.extended_at) >= age)
            .map(|(receipt, e)| {
                e.extended_at = now;
                receipt.clone()
            })
            .collect()
    }

    /// The heartbeat: twice a second, extends the visibility of messages held for a third of their
    /// queue's visibility timeout. Ends when `stop` is cancelled.
    pub async fn heartbeat(self, queues: Vec<Queue>, stats: Arc<Stats>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            for q in &queues {
                let due = self.due(q.kind, q.visibility / 3);
                if due.is_empty() {
                    continue;
                }
                let receipts: Vec<&str> = due.iter().map(String::as_str).collect();
                match q.set_visibility(&receipts, q.visibility).await {
                    Ok(failed) => {
                        stats.heartbeats(due.len() - failed);
                        tracing::debug!(queue = %q.kind, extended = due.len() - failed, failed, "visibility extended");
                    }
                    Err(e) => {
                        tracing::warn!(queue = %q.kind, error = %e, held = due.len(), "visibility heartbeat failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(receipt: &str) -> Message {
        Message {
            message_id: format!("id-{receipt}"),
            receipt_handle: receipt.into(),
            body: "{}".into(),
            sent_at_ms: 0,
            received_at: Instant::now(),
            receive_count: 1,
            attributes: HashMap::new(),
        }
    }

    #[tokio::test]
    async fn dropping_a_held_message_returns_its_permit_and_forgets_it() {
        let inflight = InFlight::new(3);
        let permits = inflight.reserve(3).await;
        let held = inflight.hold(QueueKind::Press, vec![msg("a"), msg("b")], permits);
        // The third permit was not used and is back already.
        assert_eq!(inflight.permits.available_permits(), 1);
        assert_eq!(inflight.len(), 2);
        drop(held);
        assert_eq!(inflight.permits.available_permits(), 3);
        assert!(inflight.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn only_messages_held_long_enough_are_due() {
        let inflight = InFlight::new(10);
        let p = inflight.reserve(1).await;
        let _old = inflight.hold(QueueKind::Press, vec![msg("old")], p);
        tokio::time::advance(Duration::from_secs(20)).await;
        let p = inflight.reserve(1).await;
        let _new = inflight.hold(QueueKind::Press, vec![msg("new")], p);
        assert_eq!(
            inflight.due(QueueKind::Press, Duration::from_secs(15)),
            vec!["old".to_string()]
        );
        // Just extended: not due again until another half timeout has passed.
        assert!(
            inflight
                .due(QueueKind::Press, Duration::from_secs(15))
                .is_empty()
        );
        assert!(inflight.due(QueueKind::AddUser, Duration::ZERO).is_empty());
    }

    #[tokio::test]
    async fn waiting_for_room_takes_none() {
        let inflight = InFlight::new(1);
        inflight.wait_room().await;
        assert_eq!(inflight.available(), 1);
        let p = inflight.reserve(1).await;
        let _held = inflight.hold(QueueKind::Press, vec![msg("a")], p);
        let waiting = tokio::time::timeout(Duration::from_millis(50), inflight.wait_room()).await;
        assert!(waiting.is_err(), "no room while the one message is held");
    }

    #[tokio::test]
    async fn reserve_waits_for_room() {
        let inflight = InFlight::new(2);
        let p = inflight.reserve(2).await;
        let held = inflight.hold(QueueKind::Press, vec![msg("a"), msg("b")], p);
        let waiting = tokio::time::timeout(Duration::from_millis(50), inflight.reserve(1)).await;
        assert!(waiting.is_err(), "no room while two are held");
        drop(held);
        tokio::time::timeout(Duration::from_millis(50), inflight.reserve(1))
            .await
            .expect("room after release");
    }
}
