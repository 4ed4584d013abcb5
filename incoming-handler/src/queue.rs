//! One SQS queue as the handler uses it: long-poll receive with `SentTimestamp`, batch delete with
//! per-entry results, visibility changes (heartbeat and release), and the copy of a malformed
//! message to the queue's dead-letter queue (found from its `RedrivePolicy`). Receive, delete
//! and visibility changes, the calls of every ten presses, go through [`SqsWire`]; discovery and
//! dead-letter copies through the SDK.
//!
//! Every request asks for a persistent connection (`Connection: keep-alive`): at a burst's rate
//! the handler makes two queue requests per ten presses, and a server that closes the connection
//! after each answer (LocalStack does, unless asked) would cost a TCP (in production: TLS)
//! handshake per request on both sides.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use buttonparty::aws::error_text;
use buttonparty::messages::Malformed;

use crate::sqs_wire::SqsWire;

/// Which of the four queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// Registrations and push tokens.
    AddUser,
    /// Button presses.
    Press,
    /// Powerup purchases.
    Powerup,
    /// Round open/close times from the outgoing handler.
    Timestamp,
}

impl QueueKind {
    /// Short name for logs and stats.
    pub fn as_str(&self) -> &'static str {
        match self {
            QueueKind::AddUser => "add_user",
            QueueKind::Press => "press",
            QueueKind::Powerup => "powerup",
            QueueKind::Timestamp => "timestamp",
        }
    }
}

impl fmt::Display for QueueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue service could not be reached or failed; retrying later can help.
    #[error("{queue} queue unreachable: {message}")]
    Unavailable {
        /// Which queue.
        queue: QueueKind,
        /// What the SDK said.
        message: String,
    },
    /// The service refused the request (bad URL, permissions); retrying will not help until the
    /// configuration is fixed.
    #[error("{queue} queue refused the request: {message}")]
    Refused {
        /// Which queue.
        queue: QueueKind,
        /// What the service said.
        message: String,
    },
}

impl QueueError {
    /// Whether retrying later can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, QueueError::Unavailable { .. })
    }
}

/// The name of the message attribute that carries the reason on a dead-lettered copy.
pub const REASON_ATTRIBUTE: &str = "MalformedReason";

/// A received message. Its `Debug` leaves out the body (which may carry a push token).
#[derive(Clone)]
pub struct Message {
    /// The SQS message id (stable across redeliveries).
    pub message_id: String,
    /// The receipt handle of this delivery.
    pub receipt_handle: String,
    /// The body.
    pub body: String,
    /// When API Gateway (or the sender) enqueued it: the SQS `SentTimestamp`, epoch ms.
    pub sent_at_ms: i64,
    /// When this process received it.
    pub received_at: Instant,
    /// How many times it has been received (this delivery included).
    pub receive_count: u32,
    /// The message attributes (string values only).
    pub attributes: HashMap<String, String>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("message_id", &self.message_id)
            .field("sent_at_ms", &self.sent_at_ms)
            .field("receive_count", &self.receive_count)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// What `DeleteMessageBatch` did for a set of messages.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// Entries deleted.
    pub deleted: usize,
    /// Entries the service refused (e.g. a stale receipt handle): message id and error code.
    pub failed: Vec<(String, String)>,
}

/// A queue and what the handler knows about it.
#[derive(Clone)]
pub struct Queue {
    /// Which queue.
    pub kind: QueueKind,
    /// Its URL.
    pub url: Arc<str>,
    /// Its dead-letter queue, from the redrive policy.
    pub dlq_url: Option<Arc<str>>,
    /// Its visibility timeout.
    pub visibility: Duration,
    /// The message attributes asked for on receive (none, or the identity attribute).
    attribute_names: Arc<[String]>,
    client: aws_sdk_sqs::Client,
    wire: SqsWire,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("dlq_url", &self.dlq_url)
            .field("visibility", &self.visibility)
            .finish()
    }
}

/// Adds `Connection: keep-alive` to every request (after signing: the header is hop-by-hop and
/// not signed).
#[derive(Debug)]
struct KeepAlive;

impl Intercept for KeepAlive {
    fn name(&self) -> &'static str {
        "KeepAlive"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        context
            .request_mut()
            .headers_mut()
            .insert("connection", "keep-alive");
        Ok(())
    }
}

/// `client` with [`KeepAlive`] (same HTTP client and connection pool, credentials, region).
pub fn keep_alive_client(client: &aws_sdk_sqs::Client) -> aws_sdk_sqs::Client {
    let config = client.config().to_builder().interceptor(KeepAlive).build();
    aws_sdk_sqs::Client::from_conf(config)
}

impl Queue {
    /// Reads the queue's visibility timeout and redrive policy (through the SDK `client`) and
    /// finds its dead-letter queue; receives, deletes and visibility changes go through `wire`.
    /// Receives ask for no message attributes: see [`Queue::with_attributes`].
    pub async fn discover(
        client: aws_sdk_sqs::Client,
        wire: SqsWire,
        kind: QueueKind,
        url: &str,
    ) -> Result<Self, QueueError> {
        let client = keep_alive_client(&client);
        let err = |e: &dyn fmt::Display, retry: bool| {
            let message = e.to_string();
            if retry {
                QueueError::Unavailable {
                    queue: kind,
                    message,
                }
            } else {
                QueueError::Refused {
                    queue: kind,
                    message,
                }
            }
        };
        let attrs = client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| {
                let refused = matches!(
                    buttonparty::aws::error_code(&e),
                    Some(c) if c.contains("NonExistentQueue") || c.contains("QueueDoesNotExist") || c.contains("AccessDenied")
                );
                err(&error_text(&e), !refused)
            })?
            .attributes
            .unwrap_or_default();
        let visibility = attrs
            .get(&QueueAttributeName::VisibilityTimeout)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(30));
        let dlq_url = match attrs.get(&QueueAttributeName::RedrivePolicy) {
            None => None,
            Some(policy) => {
                let arn = serde_json::from_str::<serde_json::Value>(policy)
                    .ok()
                    .and_then(|v| v.get("deadLetterTargetArn")?.as_str().map(str::to_owned));
                match arn.as_deref().and_then(parse_queue_arn) {
                    Some((account, name)) => {
                        let out = client
                            .get_queue_url()
                            .queue_name(name)
                            .queue_owner_aws_account_id(account)
                            .send()
                            .await
                            .map_err(|e| err(&error_text(&e), true))?;
                        out.queue_url.map(Arc::from)
                    }
                    None => None,
                }
            }
        };
        if dlq_url.is_none() {
            tracing::warn!(queue = %kind, "queue has no dead-letter queue (RedrivePolicy): malformed messages will only be logged");
        }
        Ok(Self {
            kind,
            url: Arc::from(url),
            dlq_url,
            visibility,
            attribute_names: Arc::from([]),
            client,
            wire,
        })
    }

    /// This queue, asking for the message attributes `names` on every receive (the identity
    /// attribute API Gateway adds, when one is configured).
    pub fn with_attributes(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.attribute_names = names.into_iter().collect();
        self
    }

    fn unavailable(&self, message: String) -> QueueError {
        QueueError::Unavailable {
            queue: self.kind,
            message,
        }
    }

    /// Long-polls for up to `max` messages (1–10), waiting up to `wait`.
    pub async fn receive(&self, max: i32, wait: Duration) -> Result<Vec<Message>, QueueError> {
        let names: Vec<&str> = self.attribute_names.iter().map(String::as_str).collect();
        let messages = self
            .wire
            .receive(
                &self.url,
                max.clamp(1, 10),
                wait.as_secs().min(20) as i32,
                &names,
            )
            .await
            .map_err(|e| self.unavailable(e.to_string()))?;
        let now = Instant::now();
        let now_ms = now_ms();
        Ok(messages
            .into_iter()
            .filter_map(|m| {
                let sent_at_ms = m
                    .attributes
                    .get("SentTimestamp")
                    .and_then(|v| v.parse::<i64>().ok());
                let sent_at_ms = match sent_at_ms {
                    Some(t) => t,
                    None => {
                        tracing::warn!(queue = %self.kind, message_id = ?m.message_id, "message without SentTimestamp; using the receive time");
                        now_ms
                    }
                };
                Some(Message {
                    receive_count: m
                        .attributes
                        .get("ApproximateReceiveCount")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1),
                    message_id: m.message_id?,
                    receipt_handle: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                    sent_at_ms,
                    received_at: now,
                    attributes: m
                        .message_attributes
                        .into_iter()
                        .filter_map(|(k, v)| Some((k, v.string_value?)))
                        .collect(),
                })
            })
            .collect())
    }

    /// Deletes messages by receipt handle, in batches of 10, checking each entry's result.
    pub async fn delete(&self, messages: &[(&str, &str)]) -> Result<DeleteOutcome, QueueError> {
        let mut outcome = DeleteOutcome::default();
        for chunk in messages.chunks(10) {
            let receipts: Vec<&str> = chunk.iter().map(|(_, r)| *r).collect();
            let out = self
                .wire
                .delete_batch(&self.url, &receipts)
                .await
                .map_err(|e| self.unavailable(e.to_string()))?;
            outcome.deleted += out.successful.len();
            for f in out.failed {
                let id =
                    f.id.parse::<usize>()
                        .ok()
                        .and_then(|i| chunk.get(i))
                        .map(|(id, _)| (*id).to_owned())
                        .unwrap_or(f.id);
                outcome.failed.push((id, f.code));
            }
        }
        Ok(outcome)
    }

    /// Sets the visibility timeout of messages (0 releases them for redelivery now). Returns
    /// how many the service refused.
    pub async fn set_visibility(
        &self,
        receipts: &[&str],
        timeout: Duration,
    ) -> Result<usize, QueueError> {
        let mut failed = 0;
        for chunk in receipts.chunks(10) {
            let out = self
                .wire
                .change_visibility_batch(&self.url, chunk, timeout.as_secs().min(43_200) as i32)
                .await
                .map_err(|e| self.unavailable(e.to_string()))?;
            failed += out.failed.len();
        }
        Ok(failed)
    }

    /// Copies a malformed message to the dead-letter queue with the reason as a message attribute.
    /// Returns false when the queue has no dead-letter queue.
    pub async fn dead_letter(&self, msg: &Message, reason: &Malformed) -> Result<bool, QueueError> {
        let Some(dlq) = &self.dlq_url else {
            return Ok(false);
        };
        let attr = |v: String| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .expect("data type is set")
        };
        // SQS rejects an empty body; keep a marker so the copy can still be inspected.
        let body = if msg.body.is_empty() {
            "(empty body)".to_owned()
        } else {
            msg.body.clone()
        };
        self.client
            .send_message()
            .queue_url(&**dlq)
            .message_body(body)
            .message_attributes(REASON_ATTRIBUTE, attr(reason.to_string()))
            .message_attributes("MalformedCode", attr(reason.code().to_owned()))
            .message_attributes("SourceMessageId", attr(msg.message_id.clone()))
            .message_attributes("SourceQueue", attr(self.kind.as_str().to_owned()))
            .send()
            .await
            .map_err(|e| self.unavailable(error_text(&e)))?;
        Ok(true)
    }
}

/// `arn:aws:sqs:region:account:name` → (account, name).
fn parse_queue_arn(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.split(':');
    let (_, _, service, _region, account, name) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (service == "sqs" && !name.is_empty()).then_some((account, name))
}

/// The wall clock in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_arns_parse() {
        assert_eq!(
            parse_queue_arn("arn:aws:sqs:us-east-1:000000000000:buttonparty-press-dlq"),
            Some(("000000000000", "buttonparty-press-dlq"))
        );
        assert_eq!(parse_queue_arn("arn:aws:sns:us-east-1:1:topic"), None);
        assert_eq!(parse_queue_arn("nonsense"), None);
    }
}
