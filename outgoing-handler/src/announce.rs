//! Announcing a round (SPEC §8, issue 4), in this order:
//!
//! 1. the timestamp message (`{"round_id","opens_at_ms","closes_at_ms"}`, see
//!    [`RoundAnnouncement::to_json`]) is sent to the timestamp queue, so the incoming handlers know
//!    the round before any phone does;
//! 2. only then, one publish to the SNS topic with `MessageStructure=json`: a `default` text, a
//!    `GCM` entry (an FCM HTTP v1 message: `notification` {title, body}, `data` {round_id,
//!    closes_at_ms} as strings, `android` {ttl, priority high}), and `APNS`/`APNS_SANDBOX` entries
//!    (`aps.alert` plus round_id and closes_at_ms), with the message attributes
//!    `AWS.SNS.MOBILE.FCM.TTL` and `AWS.SNS.MOBILE.APNS.TTL` set to the whole seconds left until
//!    the round closes (`closes_at_ms`: the window plus the fan-out, see [`crate::fanout`]), so a
//!    phone told late in the fan-out still gets the push, and none gets it after the close.
//!
//! Both steps are retried with the shared [`Backoff`] while the round is open, and never
//! after: a push that arrives after the round closed is worse than none. A publish attempt starts
//! only while at least one whole second of the window is left (the time-to-live it carries).
//! An error that no retry can fix (a queue or topic that does not exist, a refused parameter)
//! ends the attempts at once.
//!
//! SNS standard topics have no deduplication: when an attempt times out after SNS accepted it,
//! the retry publishes a second copy. Per-attempt timeouts are kept short to make this rare.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sns::types::MessageAttributeValue;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use buttonparty::aws::{error_code, error_text};
use buttonparty::backoff::Backoff;
use buttonparty::messages::RoundAnnouncement;
use rand::Rng;
use serde_json::json;

use crate::clock::Clock;
use crate::fanout;

/// Title of the push notification.
pub const NOTIFICATION_TITLE: &str = "ButtonParty";
/// Text of the push notification.
pub const NOTIFICATION_BODY: &str = "A round is open: press the button now!";
/// Message attribute carrying the FCM time-to-live, in seconds.
pub const FCM_TTL_ATTRIBUTE: &str = "AWS.SNS.MOBILE.FCM.TTL";
/// Message attribute carrying the APNs time-to-live, in seconds.
pub const APNS_TTL_ATTRIBUTE: &str = "AWS.SNS.MOBILE.APNS.TTL";
/// FCM collapse key: a newer round's notification replaces an older one still on a device.
const COLLAPSE_KEY: &str = "buttonparty-round";
/// Longest a single SQS or SNS attempt may take before it is abandoned and retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A publish needs at least this much of the window left: its time-to-live is at least 1 s.
const MIN_PUBLISH_LEFT_MS: i64 = 1_000;
/// A timestamp send needs the window to be still open.
const MIN_TIMESTAMP_LEFT_MS: i64 = 1;
/// Longest wait for the topic's subscription count before a round (then the last count read is
/// used): the round's opening waits for it.
pub const AUDIENCE_TIMEOUT: Duration = Duration::from_secs(3);

/// SQS and SNS error codes that a retry cannot fix.
const PERMANENT_CODES: &[&str] = &[
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "InvalidMessageContents",
    "InvalidAddress",
    "InvalidSecurity",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidParameterValue",
    "InvalidParameterValueException",
    "InvalidParameter",
    "InvalidParameterException",
    "NotFound",
    "NotFoundException",
    "AuthorizationError",
    "AuthorizationErrorException",
];

/// Builds a new round opening at `opens_at_ms` with a press window of `window`, closing
/// `window + fan_out_ms` after it opens (see [`crate::fanout`]); `window_ms` carries the base
/// window.
///
/// The id is `<opens_at_ms, 13 digits>-<8 random hex digits>`: unique, and sorting ids as strings
/// sorts rounds by opening time (until the year 2286).
pub fn new_round<R: Rng + ?Sized>(
    opens_at_ms: i64,
    window: Duration,
    fan_out_ms: i64,
    rng: &mut R,
) -> RoundAnnouncement {
    let window_ms = fanout::duration_ms(window);
    RoundAnnouncement {
        round_id: format!("{opens_at_ms:013}-{:08x}", rng.random::<u32>()),
        opens_at_ms,
        closes_at_ms: fanout::closes_at_ms(opens_at_ms, window_ms, fan_out_ms),
        window_ms: Some(window_ms),
    }
}

/// The SNS message (`MessageStructure=json`) announcing `round` to phones, with a time-to-live of
/// `ttl_secs` seconds in the FCM entry.
pub fn push_message(round: &RoundAnnouncement, ttl_secs: i64) -> String {
    let gcm = json!({
        "fcmV1Message": {
            "message": {
                "notification": {"title": NOTIFICATION_TITLE, "body": NOTIFICATION_BODY},
                "data": {
                    "round_id": round.round_id,
                    "closes_at_ms": round.closes_at_ms.to_string(),
                },
                "android": {
                    "priority": "high",
                    "ttl": format!("{ttl_secs}s"),
                    "collapse_key": COLLAPSE_KEY,
                },
            }
        }
    });
    let apns = json!({
        "aps": {
            "alert": {"title": NOTIFICATION_TITLE, "body": NOTIFICATION_BODY},
            "sound": "default",
        },
        "round_id": round.round_id,
        "closes_at_ms": round.closes_at_ms,
    });
    json!({
        "default": format!("{NOTIFICATION_TITLE}: {NOTIFICATION_BODY}"),
        "GCM": gcm.to_string(),
        "APNS": apns.to_string(),
        "APNS_SANDBOX": apns.to_string(),
    })
    .to_string()
}

/// One failed SQS or SNS call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// A failure a retry may fix (network, throttling, a service error, a timeout).
    #[error("{0}")]
    Transient(String),
    /// A failure no retry fixes (the queue or topic does not exist, a refused parameter or
    /// permission).
    #[error("{0}")]
    Permanent(String),
}

impl AttemptError {
    /// Classifies an SDK error by the service's error code.
    pub fn from_sdk<E, R>(e: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let text = error_text(e);
        match error_code(e) {
            Some(code) if PERMANENT_CODES.contains(&code) => AttemptError::Permanent(text),
            _ => AttemptError::Transient(text),
        }
    }

    /// Whether the same call may succeed later.
    pub fn retry_helps(&self) -> bool {
        matches!(self, AttemptError::Transient(_))
    }
}

/// A round that could not be (completely) announced. A retry does not help: the attempts ended
/// because the round's window closed or because the error is permanent; the next round is a new
/// announcement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// The timestamp message was not sent, so nothing was published either: the round is unknown
    /// to the incoming handlers and to the phones.
    #[error("timestamp message not sent after {attempts} attempt(s), push not published: {reason}")]
    TimestampNotSent {
        /// Send attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The timestamp message was sent (the incoming handlers know the round) but the push was not
    /// published before the window closed.
    #[error("timestamp message sent, but push not published after {attempts} attempt(s): {reason}")]
    PushNotPublished {
        /// Publish attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
}

impl AnnounceError {
    /// Whether the incoming handlers were told about the round (the round exists for them).
    pub fn timestamp_sent(&self) -> bool {
        matches!(self, AnnounceError::PushNotPublished { .. })
    }
}

/// A round that was announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// SNS message id of the publish.
    pub message_id: String,
    /// Attempts needed to send the timestamp message.
    pub timestamp_attempts: u32,
    /// Attempts needed to publish the push.
    pub publish_attempts: u32,
    /// The time-to-live the push carried, in seconds.
    pub ttl_secs: i64,
}

/// Sends timestamp messages and publishes pushes.
#[derive(Debug, Clone)]
pub struct Announcer<C> {
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    timestamp_queue_url: String,
    topic_arn: String,
    backoff: Backoff,
    clock: C,
}

impl<C: Clock> Announcer<C> {
    /// An announcer for the given queue and topic, retrying with the default [`Backoff`].
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        sns: aws_sdk_sns::Client,
        timestamp_queue_url: impl Into<String>,
        topic_arn: impl Into<String>,
        clock: C,
    ) -> Self {
        Self {
            sqs,
            sns,
            timestamp_queue_url: timestamp_queue_url.into(),
            topic_arn: topic_arn.into(),
            backoff: Backoff::default(),
            clock,
        }
    }

    /// Uses `backoff` between attempts instead of the default.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Checks that the timestamp queue answers (`GetQueueAttributes`).
    pub async fn check_timestamp_queue(&self) -> Result<(), AttemptError> {
        let call = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.timestamp_queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send();
        match tokio::time::timeout(ATTEMPT_TIMEOUT, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(AttemptError::from_sdk(&e)),
            Err(_) => Err(AttemptError::Transient("no answer".into())),
        }
    }

    /// Checks that the topic answers (`GetTopicAttributes`); returns its
    /// `SubscriptionsConfirmed` when it has a readable one.
    pub async fn check_topic(&self) -> Result<Option<u64>, AttemptError> {
        self.topic_attributes(ATTEMPT_TIMEOUT)
            .await
            .map(|count| count.ok())
    }

    /// The number of phones a publish reaches: the topic's `SubscriptionsConfirmed`
    /// (`GetTopicAttributes`, at most [`AUDIENCE_TIMEOUT`]). SNS updates the count with some
    /// delay; it is what a capacity estimate needs, not an exact figure.
    pub async fn topic_audience(&self) -> Result<u64, AttemptError> {
        self.topic_attributes(AUDIENCE_TIMEOUT)
            .await?
            .map_err(AttemptError::Transient)
    }

    /// `GetTopicAttributes`: the outer error when the call failed, the inner one when the
    /// subscription count is missing or not a number.
    async fn topic_attributes(&self, limit: Duration) -> Result<Result<u64, String>, AttemptError> {
        let call = self
            .sns
            .get_topic_attributes()
            .topic_arn(&self.topic_arn)
            .send();
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(out)) => Ok(subscriptions_confirmed(out.attributes())),
            Ok(Err(e)) => Err(AttemptError::from_sdk(&e)),
            Err(_) => Err(AttemptError::Transient(format!(
                "no answer within {} ms",
                limit.as_millis()
            ))),
        }
    }

    /// Announces `round`: the timestamp message first, then the push; see the module docs.
    pub async fn announce(&self, round: &RoundAnnouncement) -> Result<Announced, AnnounceError> {
        let rid = round.round_id.as_str();
        let ((), timestamp_attempts) = retry_within_window(
            &self.clock,
            &self.backoff,
            round.closes_at_ms,
            MIN_TIMESTAMP_LEFT_MS,
            "timestamp send",
            rid,
            |_| self.send_timestamp(round),
        )
        .await
        .map_err(|e| AnnounceError::TimestampNotSent {
            attempts: e.attempts,
            reason: e.reason,
        })?;

        let ((message_id, ttl_secs), publish_attempts) = retry_within_window(
            &self.clock,
            &self.backoff,
            round.closes_at_ms,
            MIN_PUBLISH_LEFT_MS,
            "push publish",
            rid,
            |left_ms| self.publish(round, left_ms / 1000),
        )
        .await
        .map_err(|e| AnnounceError::PushNotPublished {
            attempts: e.attempts,
            reason: e.reason,
        })?;

        Ok(Announced {
            message_id,
            timestamp_attempts,
            publish_attempts,
            ttl_secs,
        })
    }

    async fn send_timestamp(&self, round: &RoundAnnouncement) -> Result<(), AttemptError> {
        let mut request = self
            .sqs
            .send_message()
            .queue_url(&self.timestamp_queue_url)
            .message_body(round.to_json());
        if self.timestamp_queue_url.ends_with(".fifo") {
            request = request
                .message_group_id("rounds")
                .message_deduplication_id(&round.round_id);
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AttemptError::from_sdk(&e))
    }

    async fn publish(
        &self,
        round: &RoundAnnouncement,
        ttl_secs: i64,
    ) -> Result<(String, i64), AttemptError> {
        let ttl = |name| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(ttl_secs.to_string())
                .build()
                .map_err(|e| AttemptError::Permanent(format!("message attribute {name}: {e}")))
        };
        let out = self
            .sns
            .publish()
            .topic_arn(&self.topic_arn)
            .message_structure("json")
            .message(push_message(round, ttl_secs))
            .message_attributes(FCM_TTL_ATTRIBUTE, ttl(FCM_TTL_ATTRIBUTE)?)
            .message_attributes(APNS_TTL_ATTRIBUTE, ttl(APNS_TTL_ATTRIBUTE)?)
            .send()
            .await
            .map_err(|e| AttemptError::from_sdk(&e))?;
        Ok((out.message_id.unwrap_or_default(), ttl_secs))
    }
}

/// The topic attribute holding the number of confirmed subscriptions.
pub const SUBSCRIPTIONS_CONFIRMED: &str = "SubscriptionsConfirmed";

/// `SubscriptionsConfirmed` from a topic's attributes.
pub fn subscriptions_confirmed(
    attributes: Option<&std::collections::HashMap<String, String>>,
) -> Result<u64, String> {
    let value = attributes
        .and_then(|a| a.get(SUBSCRIPTIONS_CONFIRMED))
        .ok_or_else(|| format!("the topic has no {SUBSCRIPTIONS_CONFIRMED} attribute"))?;
    value
        .trim()
        .parse()
        .map_err(|_| format!("{SUBSCRIPTIONS_CONFIRMED} is not a count: {value:?}"))
}

/// Why [`retry_within_window`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    /// Attempts made (0 when the window was already too short for one).
    pub attempts: u32,
    /// The last failure, or why no attempt was made.
    pub reason: String,
}

/// Runs `attempt` until it succeeds, retrying transient failures after the delays of `backoff`,
/// as long as at least `min_left_ms` of the window (which ends at `closes_at_ms`, wall clock) is
/// left when an attempt starts. `attempt` receives the milliseconds left; each attempt is cut off
/// at the window's end or after 10 s. Returns the value and the number of attempts made.
pub async fn retry_within_window<T, F, Fut>(
    clock: &impl Clock,
    backoff: &Backoff,
    closes_at_ms: i64,
    min_left_ms: i64,
    what: &'static str,
    round_id: &str,
    mut attempt: F,
) -> Result<(T, u32), Exhausted>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let mut delays = backoff.iter();
    let mut attempts = 0u32;
    let mut reason = String::from("the window was closed before the first attempt");
    loop {
        let left_ms = closes_at_ms.saturating_sub(clock.now_ms());
        if left_ms < min_left_ms {
            return Err(Exhausted { attempts, reason });
        }
        attempts += 1;
        let limit = Duration::from_millis(left_ms.unsigned_abs()).min(ATTEMPT_TIMEOUT);
        let error = match tokio::time::timeout(limit, attempt(left_ms)).await {
            Ok(Ok(value)) => return Ok((value, attempts)),
            Ok(Err(e)) => e,
            Err(_) => AttemptError::Transient(format!("no answer within {} ms", limit.as_millis())),
        };
        reason = error.to_string();
        if !error.retry_helps() {
            tracing::error!(round_id = %round_id, what = %what, attempt = attempts, error = %reason, "{what} failed permanently; not retrying");
            return Err(Exhausted { attempts, reason });
        }
        let delay = delays.next().unwrap_or(backoff.max);
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let left_after_ms = closes_at_ms
            .saturating_sub(clock.now_ms())
            .saturating_sub(delay_ms);
        if left_after_ms < min_left_ms {
            tracing::warn!(round_id = %round_id, what = %what, attempt = attempts, error = %reason, "{what} failed; the round's window closes before another attempt");
            return Err(Exhausted { attempts, reason });
        }
        tracing::warn!(round_id = %round_id, what = %what, attempt = attempts, error = %reason, retry_in_ms = delay_ms, "{what} failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use serde_json::Value;

    use super::*;
    use crate::clock::TokioClock;

    fn round() -> RoundAnnouncement {
        RoundAnnouncement {
            round_id: "1700000000000-0badcafe".into(),
            opens_at_ms: 1_700_000_000_000,
            closes_at_ms: 1_700_000_060_000,
            window_ms: Some(60_000),
        }
    }

    #[test]
    fn round_ids_are_unique_and_sort_by_opening_time() {
        let mut rng = SmallRng::seed_from_u64(3);
        let window = Duration::from_secs(60);
        let mut rounds: Vec<_> = [5_i64, 1_700_000_000_000, 999, 1_700_000_000_001, 0]
            .into_iter()
            .map(|t| new_round(t, window, 0, &mut rng))
            .collect();
        for r in &rounds {
            assert_eq!(r.closes_at_ms, r.opens_at_ms + 60_000);
            assert!(r.round_id.len() <= 64);
        }
        rounds.sort_by(|a, b| a.round_id.cmp(&b.round_id));
        let times: Vec<_> = rounds.iter().map(|r| r.opens_at_ms).collect();
        assert_eq!(times, vec![0, 5, 999, 1_700_000_000_000, 1_700_000_000_001]);
        let a = new_round(7, window, 0, &mut rng);
        let b = new_round(7, window, 0, &mut rng);
        assert_ne!(a.round_id, b.round_id);
    }

    proptest::proptest! {
        #[test]
        fn round_ids_order_like_opening_times_and_parse_back(
            a in 0i64..10_000_000_000_000,
            b in 0i64..10_000_000_000_000,
            window_secs in 1u64..=86_400,
            seed: u64,
        ) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let window = Duration::from_secs(window_secs);
            let (ra, rb) = (new_round(a, window, 0, &mut rng), new_round(b, window, 0, &mut rng));
            if a != b {
                proptest::prop_assert_eq!(ra.round_id.cmp(&rb.round_id), a.cmp(&b));
            }
            // The incoming handler's parser accepts what is sent to the timestamp queue.
            let parsed = buttonparty::messages::parse_round(ra.to_json().as_bytes());
            proptest::prop_assert_eq!(parsed, Ok(ra));
        }
    }

    #[test]
    fn a_round_closes_after_its_fan_out_and_carries_the_base_window() {
        let mut rng = SmallRng::seed_from_u64(1);
        let fan_out = fanout::fan_out_ms(1_000_000, 10_000);
        let r = new_round(1_000, Duration::from_secs(60), fan_out, &mut rng);
        assert_eq!(r.closes_at_ms, 1_000 + 60_000 + 100_000);
        assert_eq!(r.window_ms, Some(60_000));
        assert_eq!(r.window(), 60_000);
        let parsed = buttonparty::messages::parse_round(r.to_json().as_bytes()).unwrap();
        assert_eq!(parsed, r);
    }

    #[test]
    fn the_subscription_count_is_read_from_the_topic_attributes() {
        let attrs = |v: &str| {
            std::collections::HashMap::from([
                (SUBSCRIPTIONS_CONFIRMED.to_owned(), v.to_owned()),
                ("SubscriptionsPending".to_owned(), "3".to_owned()),
            ])
        };
        assert_eq!(subscriptions_confirmed(Some(&attrs("0"))), Ok(0));
        assert_eq!(
            subscriptions_confirmed(Some(&attrs("12500000"))),
            Ok(12_500_000)
        );
        assert!(subscriptions_confirmed(Some(&attrs("-1"))).is_err());
        assert!(subscriptions_confirmed(Some(&attrs("many"))).is_err());
        assert!(subscriptions_confirmed(Some(&Default::default())).is_err());
        assert!(subscriptions_confirmed(None).is_err());
    }

    #[test]
    fn push_message_has_every_platform_entry() {
        let msg: Value = serde_json::from_str(&push_message(&round(), 57)).unwrap();
        assert!(msg["default"].as_str().unwrap().contains("round is open"));

        let gcm: Value = serde_json::from_str(msg["GCM"].as_str().unwrap()).unwrap();
        let m = &gcm["fcmV1Message"]["message"];
        assert_eq!(m["notification"]["title"], NOTIFICATION_TITLE);
        assert_eq!(m["notification"]["body"], NOTIFICATION_BODY);
        assert_eq!(m["data"]["round_id"], "1700000000000-0badcafe");
        // FCM data values must be strings.
        assert_eq!(m["data"]["closes_at_ms"], "1700000060000");
        assert_eq!(m["android"]["ttl"], "57s");
        assert_eq!(m["android"]["priority"], "high");

        for key in ["APNS", "APNS_SANDBOX"] {
            let apns: Value = serde_json::from_str(msg[key].as_str().unwrap()).unwrap();
            assert_eq!(apns["aps"]["alert"]["title"], NOTIFICATION_TITLE);
            assert_eq!(apns["round_id"], "1700000000000-0badcafe");
            assert_eq!(apns["closes_at_ms"], 1_700_000_060_000_i64);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let clock = TokioClock::starting_at(0);
        let calls = RefCell::new(0);
        let (value, attempts) = retry_within_window(
            &clock,
            &Backoff::default(),
            60_000,
            1_000,
            "test",
            "r",
            |_| {
                *calls.borrow_mut() += 1;
                let n = *calls.borrow();
                async move {
                    if n < 4 {
                        Err(AttemptError::Transient("nope".into()))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await
        .unwrap();
        assert_eq!((value, attempts), (4, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_the_window_closes_never_after() {
        let clock = TokioClock::starting_at(0);
        let starts = RefCell::new(Vec::new());
        let err = retry_within_window(
            &clock,
            &Backoff::default(),
            60_000,
            1_000,
            "test",
            "r",
            |left_ms| {
                starts.borrow_mut().push((clock.now_ms(), left_ms));
                async { Err::<(), _>(AttemptError::Transient("down".into())) }
            },
        )
        .await
        .unwrap_err();
        let starts = starts.into_inner();
        assert_eq!(err.attempts as usize, starts.len());
        assert!(starts.len() > 5, "{starts:?}");
        for (at, left) in &starts {
            // Every attempt started with at least a whole second of the window left.
            assert!(*at <= 59_000, "attempt at {at} ms");
            assert_eq!(*left, 60_000 - at);
        }
        // Gave up at the window's end, not long before it (the last delay is at most 10 s).
        assert!(clock.now_ms() <= 60_000);
        assert!(
            starts.last().unwrap().0 >= 60_000 - 2 * 10_000,
            "{starts:?}"
        );
        assert_eq!(err.reason, "down");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_attempt_is_cut_off_at_the_window_end() {
        let clock = TokioClock::starting_at(0);
        let err = retry_within_window(&clock, &Backoff::default(), 3_000, 1, "test", "r", |_| {
            std::future::pending::<Result<(), AttemptError>>()
        })
        .await
        .unwrap_err();
        assert_eq!(err.attempts, 1);
        assert_eq!(clock.now_ms(), 3_000);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        let clock = TokioClock::starting_at(0);
        let calls = RefCell::new(0);
        let err = retry_within_window(
            &clock,
            &Backoff::default(),
            60_000,
            1_000,
            "test",
            "r",
            |_| {
                *calls.borrow_mut() += 1;
                async { Err::<(), _>(AttemptError::Permanent("no such topic".into())) }
            },
        )
        .await
        .unwrap_err();
        assert_eq!((err.attempts, calls.into_inner()), (1, 1));
        assert_eq!(clock.now_ms(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn no_attempt_once_the_window_is_too_short() {
        let clock = TokioClock::starting_at(59_500);
        let err = retry_within_window(
            &clock,
            &Backoff::default(),
            60_000,
            1_000,
            "test",
            "r",
            |_| async { Ok::<_, AttemptError>(()) },
        )
        .await
        .unwrap_err();
        assert_eq!(err.attempts, 0);
    }
}
