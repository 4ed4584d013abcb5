//! Shared helpers of the integration tests: per-test LocalStack resources (a timestamp queue, a
//! topic with a GCM platform application, SQS and platform-endpoint subscribers) so that tests are
//! isolated and run in parallel, plus readers for what each resource received.
//!
//! The emulator comes from the environment (`AWS_ENDPOINT_URL` etc.): run the tests after
//! `scripts/dev-stack up` and `source .dev-stack/env`, or through `scripts/test`.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use buttonparty::messages::RoundAnnouncement;
use buttonparty::testing::{self, TestQueue};
use outgoing_handler::{Clients, Config};
use serde_json::Value;

/// How long to wait for an asynchronous delivery (SNS fan-out) before failing.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// One test's resources.
#[derive(Debug)]
pub struct Stack {
    /// Unique name prefix of the resources.
    pub name: String,
    /// The emulator's URL.
    pub endpoint: String,
    /// SQS client (SDK retries on: it is the test's own).
    pub sqs: aws_sdk_sqs::Client,
    /// SNS client.
    pub sns: aws_sdk_sns::Client,
    /// Clients as the handler builds them.
    pub clients: Clients,
    /// The timestamp queue.
    pub timestamp: TestQueue,
    /// The topic.
    pub topic_arn: String,
    /// The GCM platform application.
    pub app_arn: String,
}

impl Stack {
    /// Creates a timestamp queue, a topic and a platform application named after `prefix`.
    pub async fn new(prefix: &str) -> Self {
        let endpoint = testing::env("AWS_ENDPOINT_URL");
        let cfg = testing::aws_config().await;
        let sqs = aws_sdk_sqs::Client::new(&cfg);
        let sns = aws_sdk_sns::Client::new(&cfg);
        let name = testing::unique(prefix);
        let timestamp = TestQueue::new(&sqs, &format!("{name}-ts"), 30, 5).await;
        let (topic_arn, app_arn) = testing::topic_and_platform_app(&sns, &name).await;
        Self {
            name,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            clients: Clients::from_sdk_config(&cfg),
            sqs,
            sns,
            timestamp,
            topic_arn,
            app_arn,
        }
    }

    /// The handler's configuration for these resources.
    pub fn config(&self, state_dir: &Path, window_secs: u64) -> Config {
        Config {
            window: Duration::from_secs(window_secs),
            ..Config::new(&self.timestamp.url, &self.topic_arn, state_dir)
        }
    }

    /// Creates a queue subscribed to the topic; returns its URL.
    pub async fn subscribe_queue(&self) -> String {
        let url = self
            .sqs
            .create_queue()
            .queue_name(format!("{}-sub", self.name))
            .send()
            .await
            .expect("create subscriber queue")
            .queue_url
            .expect("queue url");
        let arn = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("subscriber queue attributes")
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .expect("queue arn");
        self.sns
            .subscribe()
            .topic_arn(&self.topic_arn)
            .protocol("sqs")
            .endpoint(arn)
            .send()
            .await
            .expect("subscribe queue");
        url
    }

    /// Creates `n` platform endpoints under the platform application (fake FCM tokens) and
    /// subscribes each to the topic; returns their ARNs.
    pub async fn subscribe_endpoints(&self, n: usize) -> Vec<String> {
        let mut arns = Vec::new();
        for i in 0..n {
            let arn = self
                .sns
                .create_platform_endpoint()
                .platform_application_arn(&self.app_arn)
                .token(format!("fcm-token-{}-{i}", self.name))
                .send()
                .await
                .expect("create platform endpoint")
                .endpoint_arn
                .expect("endpoint arn");
            self.sns
                .subscribe()
                .topic_arn(&self.topic_arn)
                .protocol("application")
                .endpoint(&arn)
                .send()
                .await
                .expect("subscribe endpoint");
            arns.push(arn);
        }
        arns
    }

    /// What LocalStack recorded as delivered to `endpoint_arn`
    /// (`GET /_aws/sns/platform-endpoint-messages?endpointArn=…`).
    pub async fn endpoint_messages(&self, endpoint_arn: &str) -> Vec<Value> {
        let url = format!("{}/_aws/sns/platform-endpoint-messages", self.endpoint);
        let body: Value = reqwest::Client::new()
            .get(url)
            .query(&[("endpointArn", endpoint_arn)])
            .send()
            .await
            .expect("GET platform-endpoint-messages")
            .error_for_status()
            .expect("platform-endpoint-messages status")
            .json()
            .await
            .expect("platform-endpoint-messages JSON");
        body["platform_endpoint_messages"][endpoint_arn]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `endpoint_arn` received `n` messages (failing after [`DELIVERY_TIMEOUT`]), then
    /// a little longer to catch extra ones; returns all of them.
    pub async fn wait_endpoint_messages(&self, endpoint_arn: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
        loop {
            let got = self.endpoint_messages(endpoint_arn).await;
            if got.len() >= n {
                tokio::time::sleep(Duration::from_millis(500)).await;
                return self.endpoint_messages(endpoint_arn).await;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "endpoint {endpoint_arn} received {} of {n} messages",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Receives messages from `url` until `n` arrived (failing after [`DELIVERY_TIMEOUT`]), then
    /// polls once more to catch extra ones. Messages are left in flight, not deleted.
    pub async fn receive(&self, url: &str, n: usize) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
        let mut got = Vec::new();
        while got.len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "queue {url}: received {} of {n} messages",
                got.len()
            );
            got.extend(self.receive_batch(url, 1).await);
        }
        got.extend(self.receive_batch(url, 1).await);
        got
    }

    /// One receive call (up to 10 messages, long poll of `wait_secs`).
    pub async fn receive_batch(&self, url: &str, wait_secs: i32) -> Vec<Message> {
        self.sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .visibility_timeout(600)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .expect("receive message")
            .messages
            .unwrap_or_default()
    }

    /// Deletes the queues and the topic (best effort).
    pub async fn cleanup(&self, extra_queues: &[&str]) {
        self.timestamp.delete(&self.sqs).await;
        for url in extra_queues {
            let _ = self.sqs.delete_queue().queue_url(*url).send().await;
        }
        let _ = self
            .sns
            .delete_topic()
            .topic_arn(&self.topic_arn)
            .send()
            .await;
        let _ = self
            .sns
            .delete_platform_application()
            .platform_application_arn(&self.app_arn)
            .send()
            .await;
    }
}

/// The round carried by a timestamp queue message.
pub fn round_of(message: &Message) -> RoundAnnouncement {
    let body = message.body().expect("message body");
    buttonparty::messages::parse_round(body.as_bytes())
        .unwrap_or_else(|e| panic!("timestamp message {body:?} is not a round: {e}"))
}

/// The `SentTimestamp` of a received message, epoch ms.
pub fn sent_ms(message: &Message) -> i64 {
    message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
        .and_then(|v| v.parse().ok())
        .expect("SentTimestamp attribute")
}

/// Parses JSON that may be encoded as a JSON string, possibly more than once (LocalStack's
/// platform-endpoint-messages returns the per-platform message JSON-encoded).
pub fn decode_json(value: &Value) -> Value {
    let mut v = value.clone();
    while let Value::String(s) = &v {
        match serde_json::from_str::<Value>(s) {
            Ok(inner) => v = inner,
            Err(_) => break,
        }
    }
    v
}

/// Checks one message LocalStack recorded for a platform endpoint: the FCM payload with the
/// round's id and closing time as data, a notification, an android TTL, and the FCM and APNs TTL
/// attributes of 1 to `window_secs` seconds (the round's whole length: its window plus its
/// fan-out). Returns the round id it carries.
pub fn check_endpoint_message(message: &Value, window_secs: i64) -> String {
    let gcm = decode_json(&message["Message"]);
    let fcm = &gcm["fcmV1Message"]["message"];
    assert!(
        fcm["notification"]["title"].is_string(),
        "no notification: {gcm}"
    );
    assert!(
        fcm["notification"]["body"].is_string(),
        "no notification: {gcm}"
    );
    let round_id = fcm["data"]["round_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no data.round_id: {gcm}"))
        .to_owned();
    let closes_at: i64 = fcm["data"]["closes_at_ms"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("data.closes_at_ms is not a string of digits: {gcm}"));
    assert!(closes_at > 0);
    let attrs: HashMap<String, Value> =
        serde_json::from_value(message["MessageAttributes"].clone()).expect("attributes");
    let mut ttls = Vec::new();
    for name in ["AWS.SNS.MOBILE.FCM.TTL", "AWS.SNS.MOBILE.APNS.TTL"] {
        let attr = attrs
            .get(name)
            .unwrap_or_else(|| panic!("no {name} attribute: {attrs:?}"));
        assert_eq!(attr["DataType"], "String", "{name}: {attr}");
        let ttl: i64 = attr["StringValue"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not a number: {attr}"));
        assert!(
            (1..=window_secs).contains(&ttl),
            "{name} = {ttl}, window {window_secs}"
        );
        ttls.push(ttl);
    }
    assert_eq!(fcm["android"]["ttl"], format!("{}s", ttls[0]), "{gcm}");
    round_id
}
