//! A consumer that "crashes": it receives a few messages and never deletes them, as a consumer
//! killed mid-batch would leave them. Each stays invisible until its release time, then SQS
//! delivers it again — the same `MessageId`, a higher receive count — to the incoming handler.
//!
//! Held messages are kept invisible with a long visibility timeout and released explicitly
//! (`ChangeMessageVisibility` to 0) at their release time, so that the demo knows at every moment
//! which messages the handler cannot have seen yet.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use buttonparty::rules::Millis;

use crate::send::now_ms;

/// How long a held message stays invisible at most if nobody releases it, s.
const HOLD_CEILING_SECS: i32 = 300;

/// A short hold, ms: the message comes back within its round.
pub const SHORT_HOLD_MS: Millis = 3_000;

/// One message taken and not deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Short queue name (`press`, `powerup`).
    pub queue: String,
    /// Its URL.
    pub url: String,
    /// The message's id.
    pub message_id: String,
    /// The receipt handle of the receive.
    pub receipt: String,
    /// Its body.
    pub body: String,
    /// The round it was taken in.
    pub round: usize,
    /// When it was taken, epoch ms.
    pub taken_at: Millis,
    /// When it is to be visible again (`i64::MAX`: until [`Chaos::release_at`] says).
    pub release_at: Millis,
    /// When it was made visible again.
    pub released_at: Option<Millis>,
    /// Held until told (into the next round), not for a fixed time.
    pub across: bool,
}

/// The crashing consumer and what it holds.
#[derive(Debug, Clone)]
pub struct Chaos {
    sqs: aws_sdk_sqs::Client,
    held: Arc<Mutex<Vec<Held>>>,
}

impl Chaos {
    /// A consumer on the queues given to [`Chaos::take`].
    pub fn new(sqs: aws_sdk_sqs::Client) -> Self {
        Self {
            sqs,
            held: Arc::default(),
        }
    }

    /// Receives up to `n` messages from `url` until `until` (epoch ms), holding each for
    /// `hold_ms` (`None`: until [`Chaos::release_at`]). With `prefer`, only messages by those
    /// usernames count; up to three others are held for [`SHORT_HOLD_MS`] on the way. Returns
    /// how many it took.
    #[allow(clippy::too_many_arguments)]
    pub async fn take(
        &self,
        queue: &str,
        url: &str,
        round: usize,
        n: usize,
        until: Millis,
        hold_ms: Option<Millis>,
        prefer: Option<&HashSet<String>>,
    ) -> anyhow::Result<usize> {
        let mut taken = 0;
        let mut others = 0;
        while taken < n && others < 3 {
            let left = until - now_ms();
            if left < 100 {
                break;
            }
            let wait = i32::try_from((left / 1000).clamp(0, 1)).unwrap_or(1);
            let resp = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(1)
                .wait_time_seconds(wait)
                .visibility_timeout(HOLD_CEILING_SECS)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!(buttonparty::aws::error_text(&e)))
                .with_context(|| format!("chaos: receiving from the {queue} queue"))?;
            for m in resp.messages.unwrap_or_default() {
                let (Some(id), Some(receipt)) = (m.message_id, m.receipt_handle) else {
                    continue;
                };
                if self.lock().iter().any(|h| h.message_id == id) {
                    // Taken once already (and released): give it back at once.
                    self.set_visible(url, &receipt).await?;
                    continue;
                }
                let taken_at = now_ms();
                let body = m.body.unwrap_or_default();
                let wanted = prefer.is_none_or(|p| {
                    serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("username")?.as_str().map(|u| p.contains(u)))
                        .unwrap_or(false)
                });
                let hold_ms = if wanted {
                    taken += 1;
                    hold_ms
                } else {
                    others += 1;
                    Some(SHORT_HOLD_MS)
                };
                self.lock().push(Held {
                    queue: queue.to_owned(),
                    url: url.to_owned(),
                    message_id: id,
                    receipt,
                    body,
                    round,
                    taken_at,
                    release_at: hold_ms.map_or(Millis::MAX, |h| taken_at + h),
                    released_at: None,
                    across: hold_ms.is_none(),
                });
            }
        }
        Ok(taken)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the release time of the messages held until told, taken in `round`.
    pub fn release_at(&self, round: usize, at: Millis) {
        for h in self.lock().iter_mut() {
            if h.round == round && h.release_at == Millis::MAX {
                h.release_at = at;
            }
        }
    }

    /// Releases every held message whose time has come (visibility 0: delivered again).
    pub async fn release_due(&self) -> anyhow::Result<usize> {
        let now = now_ms();
        let due: Vec<Held> = self
            .lock()
            .iter()
            .filter(|h| h.released_at.is_none() && h.release_at <= now)
            .cloned()
            .collect();
        for h in &due {
            self.set_visible(&h.url, &h.receipt)
                .await
                .with_context(|| format!("chaos: releasing message {}", h.message_id))?;
            let at = now_ms();
            if let Some(x) = self.lock().iter_mut().find(|x| x.receipt == h.receipt) {
                x.released_at = Some(at);
            }
        }
        Ok(due.len())
    }

    /// Makes a received message visible again. A receipt SQS no longer knows (the message was
    /// delivered elsewhere meanwhile and deleted) counts as done.
    async fn set_visible(&self, url: &str, receipt: &str) -> anyhow::Result<()> {
        match self
            .sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let text = buttonparty::aws::error_text(&e);
                if text.contains("does not exist") || text.contains("ReceiptHandleIsInvalid") {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!(text))
                }
            }
        }
    }

    /// Releases everything still held (at the end, or on an error).
    pub async fn release_all(&self) -> anyhow::Result<usize> {
        let now = now_ms();
        for h in self.lock().iter_mut() {
            if h.released_at.is_none() {
                h.release_at = h.release_at.min(now);
            }
        }
        self.release_due().await
    }

    /// Releases due messages every 50 ms until the returned task is aborted.
    pub fn spawn_releaser(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.release_due().await {
                    tracing::warn!("{e:#}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    /// Everything taken so far.
    pub fn held(&self) -> Vec<Held> {
        self.lock().clone()
    }

    /// Messages held and not released yet, per queue name.
    pub fn unreleased(&self) -> Vec<Held> {
        self.lock()
            .iter()
            .filter(|h| h.released_at.is_none())
            .cloned()
            .collect()
    }
}
