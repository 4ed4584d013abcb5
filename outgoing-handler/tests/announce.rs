//! Announcing rounds against LocalStack, through the library: what the timestamp queue, an SQS
//! subscriber of the topic and the platform endpoints receive.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Stack, check_endpoint_message, decode_json, round_of, sent_ms};
use outgoing_handler::announce::{AnnounceError, Announcer};
use outgoing_handler::clock::SystemClock;
use outgoing_handler::fanout::AudienceSource;
use outgoing_handler::state::{StateFile, Store};
use outgoing_handler::{FanOutPlanner, OpenRoundError};
use serde_json::Value;

const WINDOW_SECS: u64 = 60;

#[tokio::test]
async fn each_opening_sends_the_timestamp_first_then_exactly_one_push() {
    let stack = Stack::new("og-announce").await;
    let subscriber = stack.subscribe_queue().await;
    let endpoints = stack.subscribe_endpoints(2).await;
    let dir = tempfile::tempdir().unwrap();
    let config = stack.config(dir.path(), WINDOW_SECS);

    let mut opened = Vec::new();
    for _ in 0..2 {
        opened.push(
            outgoing_handler::open_round(&config, &stack.clients)
                .await
                .expect("open round"),
        );
    }
    let round_ids: BTreeSet<String> = opened.iter().map(|o| o.round.round_id.clone()).collect();
    assert_eq!(round_ids.len(), 2);
    for o in &opened {
        assert_eq!(o.round.closes_at_ms - o.round.opens_at_ms, 60_000);
        assert_eq!(
            (o.announced.timestamp_attempts, o.announced.publish_attempts),
            (1, 1)
        );
        assert!((1..=60).contains(&o.announced.ttl_secs));
    }
    // The last opening is recorded in the state.
    let last = StateFile::new(dir.path()).load().unwrap().unwrap();
    assert_eq!(last.round_id, opened[1].round.round_id);

    // The timestamp queue carries each round, exactly once.
    let stamps = stack.receive(&stack.timestamp.url, 2).await;
    assert_eq!(stamps.len(), 2, "timestamp messages: {stamps:?}");
    let mut stamped: Vec<_> = stamps.iter().map(round_of).collect();
    stamped.sort_by(|a, b| a.round_id.cmp(&b.round_id));
    assert_eq!(
        stamped,
        vec![opened[0].round.clone(), opened[1].round.clone()]
    );

    // The SQS subscriber gets exactly one notification per opening, with the publish's id, and
    // after the round's timestamp message was sent.
    let notes = stack.receive(&subscriber, 2).await;
    assert_eq!(notes.len(), 2, "notifications: {notes:?}");
    let mut ids: Vec<String> = Vec::new();
    for note in &notes {
        let envelope: Value = serde_json::from_str(note.body().unwrap()).unwrap();
        assert_eq!(envelope["Type"], "Notification");
        assert_eq!(envelope["TopicArn"], stack.topic_arn.as_str());
        ids.push(envelope["MessageId"].as_str().unwrap().to_owned());
    }
    ids.sort();
    let mut expected: Vec<String> = opened
        .iter()
        .map(|o| o.announced.message_id.clone())
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    let first_push = notes.iter().map(sent_ms).min().unwrap();
    let first_stamp = stamps.iter().map(sent_ms).min().unwrap();
    assert!(
        first_stamp <= first_push,
        "push at {first_push} before timestamp at {first_stamp}"
    );

    // Every subscribed endpoint got the FCM payload of each round, with the TTL attributes.
    for endpoint in &endpoints {
        let messages = stack.wait_endpoint_messages(endpoint, 2).await;
        assert_eq!(messages.len(), 2, "{endpoint}: {messages:#?}");
        let got: BTreeSet<String> = messages
            .iter()
            .map(|m| check_endpoint_message(m, WINDOW_SECS as i64))
            .collect();
        assert_eq!(got, round_ids, "{endpoint}");
        for m in &messages {
            assert_eq!(m["MessageStructure"], "json");
            assert_eq!(m["TopicArn"], stack.topic_arn.as_str());
            let data = &decode_json(&m["Message"])["fcmV1Message"]["message"]["data"];
            let round = opened
                .iter()
                .find(|o| o.round.round_id == data["round_id"])
                .unwrap();
            assert_eq!(data["closes_at_ms"], round.round.closes_at_ms.to_string());
        }
    }

    stack.cleanup(&[&subscriber]).await;
}

#[tokio::test]
async fn no_push_is_published_when_the_timestamp_cannot_be_sent() {
    let stack = Stack::new("og-nostamp").await;
    let subscriber = stack.subscribe_queue().await;
    let endpoints = stack.subscribe_endpoints(1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = stack.config(dir.path(), 5);
    config.timestamp_queue_url = format!("{}-missing", stack.timestamp.url);

    let started = Instant::now();
    let err = outgoing_handler::open_round(&config, &stack.clients)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up after the window"
    );
    match err {
        OpenRoundError::Announce {
            source: AnnounceError::TimestampNotSent { .. },
            ..
        } => {}
        other => panic!("unexpected: {other:?}"),
    }
    // The opening is recorded all the same: the gap restarts from it.
    assert!(StateFile::new(dir.path()).load().unwrap().is_some());

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(stack.receive_batch(&subscriber, 1).await.is_empty());
    assert!(stack.endpoint_messages(&endpoints[0]).await.is_empty());
    stack.cleanup(&[&subscriber]).await;
}

#[tokio::test]
async fn a_push_that_cannot_be_published_is_reported_after_the_timestamp_went_out() {
    let stack = Stack::new("og-nopush").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = stack.config(dir.path(), 3);
    config.topic_arn = format!("{}-missing", stack.topic_arn);

    let started = Instant::now();
    let err = outgoing_handler::open_round(&config, &stack.clients)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let OpenRoundError::Announce { round, source } = err else {
        panic!("unexpected: {err:?}");
    };
    assert!(source.timestamp_sent(), "{source}");
    assert!(
        matches!(source, AnnounceError::PushNotPublished { .. }),
        "{source}"
    );
    // The timestamp message went out before the publish was tried.
    let stamps = stack.receive(&stack.timestamp.url, 1).await;
    assert_eq!(stamps.iter().map(round_of).collect::<Vec<_>>(), vec![round]);
    stack.cleanup(&[]).await;
}

#[tokio::test]
async fn a_large_audience_makes_the_round_close_later_and_the_push_live_until_then() {
    let stack = Stack::new("og-fanout").await;
    let endpoints = stack.subscribe_endpoints(1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = stack.config(dir.path(), 20);
    // 250,000 phones at 1,000 pushes/s: 250 s of fan-out after a 20 s window.
    config.push_audience = Some(250_000);
    config.push_rate_per_sec = 1_000;
    let opened = outgoing_handler::open_round(&config, &stack.clients)
        .await
        .expect("open round");
    let round = &opened.round;
    assert_eq!(
        (opened.fan_out.audience, opened.fan_out.source),
        (250_000, AudienceSource::Override)
    );
    assert_eq!(round.closes_at_ms - round.opens_at_ms, 20_000 + 250_000);
    assert_eq!(round.window_ms, Some(20_000));
    // The push lives until the round closes, far beyond the base window.
    assert!(
        (260..=270).contains(&opened.announced.ttl_secs),
        "ttl {}",
        opened.announced.ttl_secs
    );
    // The incoming handlers get the later close and the base window.
    let stamped = round_of(&stack.receive(&stack.timestamp.url, 1).await[0]);
    assert_eq!(&stamped, round);
    // The phone gets the later close, with the TTL attributes.
    let messages = stack.wait_endpoint_messages(&endpoints[0], 1).await;
    assert_eq!(check_endpoint_message(&messages[0], 270), round.round_id);
    let data = &decode_json(&messages[0]["Message"])["fcmV1Message"]["message"]["data"];
    assert_eq!(data["closes_at_ms"], round.closes_at_ms.to_string());
    stack.cleanup(&[]).await;
}

#[tokio::test]
async fn the_audience_is_read_from_the_topic_and_the_last_count_is_kept_when_it_cannot_be() {
    let stack = Stack::new("og-audience").await;
    stack.subscribe_endpoints(2).await;
    let dir = tempfile::tempdir().unwrap();
    let config = stack.config(dir.path(), 60);
    let announcer = Announcer::new(
        stack.clients.sqs.clone(),
        stack.clients.sns.clone(),
        &config.timestamp_queue_url,
        &config.topic_arn,
        SystemClock,
    );
    let mut planner = FanOutPlanner::new(&config);
    let first = planner.plan(&announcer).await;
    assert_eq!(first.source, AudienceSource::Topic);
    assert_eq!(first.rate_per_sec, 10_000);
    // What the topic reports (LocalStack reports 0 whatever the subscriptions; AWS counts them).
    let counted = announcer.topic_audience().await.expect("topic attributes");
    assert_eq!(first.audience, counted);

    // The topic cannot be read any more: the last count read, not 0.
    let _ = stack
        .sns
        .delete_topic()
        .topic_arn(&stack.topic_arn)
        .send()
        .await;
    let later = planner.plan(&announcer).await;
    assert_eq!(
        (later.audience, later.source),
        (first.audience, AudienceSource::LastKnown)
    );
    assert!(announcer.topic_audience().await.is_err());

    // A planner that never read the topic: audience 0, the base window only.
    let mut fresh = FanOutPlanner::new(&config);
    let unknown = fresh.plan(&announcer).await;
    assert_eq!(
        (unknown.audience, unknown.source),
        (0, AudienceSource::Unknown)
    );
    assert_eq!(unknown.ms(), 0);

    // With an override the topic is not needed at all.
    let mut overridden = config.clone();
    overridden.push_audience = Some(30_000);
    let f = FanOutPlanner::new(&overridden).plan(&announcer).await;
    assert_eq!(
        (f.audience, f.source, f.ms()),
        (30_000, AudienceSource::Override, 3_000)
    );
    stack.cleanup(&[]).await;
}
