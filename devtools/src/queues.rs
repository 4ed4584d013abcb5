//! Queue depths: how many messages a queue still holds, and waiting until the incoming handler
//! has taken everything (deleted after commit, so an empty queue means applied or dead-lettered).

use std::time::Duration;

use anyhow::{Context as _, bail};
use aws_sdk_sqs::types::QueueAttributeName as A;

use crate::progress::Progress;

/// Messages in a queue: visible, in flight (received, not yet deleted) and delayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    /// Waiting to be received.
    pub visible: u64,
    /// Received and not yet deleted.
    pub in_flight: u64,
    /// Delayed.
    pub delayed: u64,
}

impl Depth {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// The queue's depth from its attributes (approximate in AWS, exact on an idle emulator).
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<Depth> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(buttonparty::aws::error_text(&e)))
        .with_context(|| format!("reading the attributes of {url}"))?
        .attributes
        .unwrap_or_default();
    let get = |k: &A| attrs.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Depth {
        visible: get(&A::ApproximateNumberOfMessages),
        in_flight: get(&A::ApproximateNumberOfMessagesNotVisible),
        delayed: get(&A::ApproximateNumberOfMessagesDelayed),
    })
}

/// The URL of the queue's dead-letter queue (from its redrive policy), if it has one.
pub async fn dead_letter_queue(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> anyhow::Result<Option<String>> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::RedrivePolicy)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(buttonparty::aws::error_text(&e)))
        .with_context(|| format!("reading the redrive policy of {url}"))?
        .attributes
        .unwrap_or_default();
    let Some(policy) = attrs.get(&A::RedrivePolicy) else {
        return Ok(None);
    };
    let policy: serde_json::Value =
        serde_json::from_str(policy).context("parsing the redrive policy")?;
    let Some(arn) = policy.get("deadLetterTargetArn").and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    let name = arn.rsplit(':').next().unwrap_or(arn);
    let dlq = sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(buttonparty::aws::error_text(&e)))
        .with_context(|| format!("looking up the dead-letter queue {name}"))?;
    Ok(dlq.queue_url)
}

/// A queue to watch, with a short name for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedQueue {
    /// Display name (`press`, `add-user`, ...).
    pub name: String,
    /// URL.
    pub url: String,
}

/// Waits until every queue is empty (visible, in flight and delayed all 0) on `settle`
/// consecutive polls one second apart, or fails after `timeout` naming what is left.
pub async fn wait_drained(
    sqs: &aws_sdk_sqs::Client,
    queues: &[NamedQueue],
    timeout: Duration,
    settle: u32,
    progress: &Progress,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut empty_polls = 0;
    loop {
        let mut total = 0;
        let mut parts = Vec::new();
        for q in queues {
            let d = depth(sqs, &q.url).await?;
            total += d.total();
            if d.total() > 0 {
                parts.push(format!(
                    "{} {} waiting + {} in flight",
                    q.name,
                    d.visible + d.delayed,
                    d.in_flight
                ));
            }
        }
        let last = if parts.is_empty() {
            "all empty".into()
        } else {
            parts.join(", ")
        };
        progress.set_message(last.clone());
        if total == 0 {
            empty_polls += 1;
            if empty_polls >= settle {
                return Ok(());
            }
        } else {
            empty_polls = 0;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the queues were not drained within {} s ({last}): is the incoming handler running?",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
