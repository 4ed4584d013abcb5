//! Enqueuing message bodies the way API Gateway does: `SendMessageBatch` (10 per call) on a
//! standard queue, many calls at once. [`send_bodies`] is the load generator's core (the demo's
//! registrations and the benchmark's `--burst`); [`send_batch`] sends one batch and tells, per
//! message, whether and when it was accepted (the timed presses of a round need that).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::StreamExt as _;

use crate::progress::Progress;

/// Most messages in one `SendMessageBatch` call (an SQS limit).
pub const MAX_BATCH: usize = 10;

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOptions {
    /// `SendMessageBatch` calls in flight at once.
    pub concurrency: usize,
    /// Attempts per message (a failed call or a failed entry is retried with a short backoff).
    pub attempts: u32,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            attempts: 4,
        }
    }
}

/// What happened to one message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryOutcome {
    /// Whether SQS accepted it.
    pub ok: bool,
    /// Clock (epoch ms) just before the call that settled it.
    pub before_ms: i64,
    /// Clock (epoch ms) just after that call. SQS's `SentTimestamp` lies in
    /// `[before_ms, after_ms]` when SQS's clock agrees with ours.
    pub after_ms: i64,
    /// The last error, when it was not accepted.
    pub error: Option<String>,
    /// The `MessageId` SQS gave it, when accepted.
    pub message_id: Option<String>,
}

/// Totals of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SendStats {
    /// Messages accepted by SQS.
    pub sent: u64,
    /// Messages that failed every attempt.
    pub failed: u64,
    /// `SendMessageBatch` calls made (retries included).
    pub calls: u64,
    /// Wall time, ms.
    pub elapsed_ms: u64,
}

impl SendStats {
    /// Accepted messages per second.
    pub fn per_sec(&self) -> f64 {
        if self.elapsed_ms == 0 {
            0.0
        } else {
            self.sent as f64 * 1000.0 / self.elapsed_ms as f64
        }
    }
}

/// Sends up to [`MAX_BATCH`] bodies in one call, retrying the whole call or the failed entries up
/// to `attempts` times. Returns one outcome per body, in order, and the number of calls made.
pub async fn send_batch(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    bodies: &[String],
    attempts: u32,
) -> (Vec<EntryOutcome>, u64) {
    let entries: Vec<(String, i32)> = bodies.iter().map(|b| (b.clone(), 0)).collect();
    send_batch_delayed(sqs, queue_url, &entries, attempts).await
}

/// [`send_batch`] with a `DelaySeconds` per message (`(body, delay_secs)`, 0 to 900): SQS keeps
/// the message's `SentTimestamp` at the send and delivers it that many seconds later.
pub async fn send_batch_delayed(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    entries: &[(String, i32)],
    attempts: u32,
) -> (Vec<EntryOutcome>, u64) {
    assert!(
        entries.len() <= MAX_BATCH,
        "at most {MAX_BATCH} bodies per batch"
    );
    let bodies: Vec<&String> = entries.iter().map(|(b, _)| b).collect();
    let mut out: Vec<Option<EntryOutcome>> = vec![None; entries.len()];
    let mut pending: Vec<usize> = (0..bodies.len()).collect();
    let mut last_error: Vec<Option<String>> = vec![None; bodies.len()];
    let mut calls = 0;
    let attempts = attempts.max(1);
    for attempt in 1..=attempts {
        if pending.is_empty() {
            break;
        }
        if attempt > 1 {
            tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt - 2))).await;
        }
        let entries: Vec<SendMessageBatchRequestEntry> = pending
            .iter()
            .map(|&i| {
                let delay = entries[i].1;
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(bodies[i])
                    .set_delay_seconds((delay > 0).then_some(delay))
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let before_ms = now_ms();
        let result = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        let after_ms = now_ms();
        calls += 1;
        match result {
            Ok(resp) => {
                for ok in resp.successful() {
                    if let Ok(i) = ok.id().parse::<usize>()
                        && i < out.len()
                    {
                        out[i] = Some(EntryOutcome {
                            ok: true,
                            before_ms,
                            after_ms,
                            error: None,
                            message_id: Some(ok.message_id().to_owned()),
                        });
                    }
                }
                for failed in resp.failed() {
                    if let Ok(i) = failed.id().parse::<usize>()
                        && i < out.len()
                    {
                        last_error[i] = Some(format!(
                            "{}: {}",
                            failed.code(),
                            failed.message().unwrap_or("no message")
                        ));
                        // A sender fault (bad body) never succeeds on retry.
                        if failed.sender_fault() {
                            out[i] = Some(EntryOutcome {
                                ok: false,
                                before_ms,
                                after_ms,
                                error: last_error[i].clone(),
                                message_id: None,
                            });
                        }
                    }
                }
            }
            Err(e) => {
                let text = buttonparty::aws::error_text(&e);
                for &i in &pending {
                    last_error[i] = Some(text.clone());
                }
            }
        }
        pending.retain(|&i| out[i].is_none());
    }
    let now = now_ms();
    let outcomes = out
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.unwrap_or_else(|| EntryOutcome {
                ok: false,
                before_ms: now,
                after_ms: now,
                error: last_error[i].clone(),
                message_id: None,
            })
        })
        .collect();
    (outcomes, calls)
}

/// Sends every body to the queue as fast as `options` allow (batches of 10, `concurrency` calls
/// in flight), advancing `progress` by one per message settled. The first few errors are printed
/// through `progress`.
pub async fn send_bodies(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    bodies: Vec<String>,
    options: SendOptions,
    progress: &Progress,
) -> SendStats {
    let started = Instant::now();
    let batches: Vec<Vec<String>> = bodies.chunks(MAX_BATCH).map(<[String]>::to_vec).collect();
    let mut stats = SendStats::default();
    let mut errors_shown = 0;
    let mut results = futures::stream::iter(batches)
        .map(|batch| async move { send_batch(sqs, queue_url, &batch, options.attempts).await })
        .buffer_unordered(options.concurrency.max(1));
    while let Some((outcomes, calls)) = results.next().await {
        stats.calls += calls;
        for o in &outcomes {
            if o.ok {
                stats.sent += 1;
            } else {
                stats.failed += 1;
                if errors_shown < 5 {
                    errors_shown += 1;
                    progress.println(format!(
                        "send failed: {}",
                        o.error.as_deref().unwrap_or("unknown error")
                    ));
                }
            }
        }
        progress.inc(outcomes.len() as u64);
    }
    stats.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    stats
}
