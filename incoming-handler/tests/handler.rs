//! The incoming handler against the real dev stack (LocalStack + MariaDB): game rules end to end,
//! exactly-once under duplicates, crashes and concurrent handlers, malformed messages, late round
//! messages, database outages, push endpoints and powerups.

mod common;

use std::time::Duration;

use common::*;
use sqlx::Row;

const ROUND_WINDOW: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presses_score_once_and_duplicates_are_rejected() {
    let s = Stack::new().await;
    let users: Vec<String> = (0..20).map(|i| format!("player-{i}")).collect();
    s.seed_users(&users).await;
    s.open_round("r1", Duration::from_secs(1), ROUND_WINDOW)
        .await;
    let h = s.spawn_handler().await;
    s.wait_rounds(1).await;
    // Every player presses twice; one unknown player presses too.
    let mut bodies: Vec<String> = users.iter().map(|u| press(u)).collect();
    bodies.extend(users.iter().map(|u| press(u)));
    bodies.push(press("nobody"));
    s.send_all(&s.press, &bodies).await;
    wait_for("presses judged", Duration::from_secs(30), || async {
        let t = h.stats.totals();
        t.applied + t.rejected + t.pending >= bodies.len() as u64
            && s.depth(&s.press.url).await == 0
    })
    .await;
    for u in &users {
        assert_eq!(
            s.score(u).await,
            Some(1),
            "{u}: first press, streak 1 = 1 point"
        );
    }
    assert_eq!(
        s.score("nobody").await,
        None,
        "a press never registers a player"
    );
    assert_eq!(s.count("SELECT COUNT(*) FROM scores").await, 20);
    let t = h.stats.totals();
    assert_eq!(t.applied, 20 + 1, "20 presses + 1 round");
    assert_eq!(t.rejected, 20, "20 second presses");
    assert_eq!(
        t.pending, 1,
        "the unknown player's press waits for a registration"
    );
    h.stop().await;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_message_in_a_batch_goes_to_the_dead_letter_queue_and_the_rest_apply() {
    let s = Stack::new().await;
    let users: Vec<String> = (0..9).map(|i| format!("m-{i}")).collect();
    s.seed_users(&users).await;
    s.open_round("r1", Duration::from_secs(1), ROUND_WINDOW)
        .await;
    let mut bodies: Vec<String> = users.iter().map(|u| press(u)).collect();
    bodies.insert(4, r#"{"username": 42}"#.to_string());
    bodies.insert(7, "not json at all".to_string());
    let h = s.spawn_handler().await;
    s.send_all(&s.press, &bodies).await;
    wait_for("all presses scored", Duration::from_secs(30), || async {
        s.count("SELECT COUNT(*) FROM scores").await == 9
    })
    .await;
    wait_for("source queue empty", Duration::from_secs(30), || async {
        s.depth(&s.press.url).await == 0
    })
    .await;
    let dead = s.drain_dlq(&s.press.dlq_url).await;
    assert_eq!(dead.len(), 2, "both malformed messages are dead-lettered");
    let mut reasons: Vec<String> = dead
        .iter()
        .map(|m| {
            m.message_attributes
                .as_ref()
                .and_then(|a| a.get("MalformedReason"))
                .and_then(|v| v.string_value.clone())
                .expect("reason attribute")
        })
        .collect();
    reasons.sort();
    assert!(
        reasons.iter().any(|r| r.contains("username")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.to_lowercase().contains("json")),
        "{reasons:?}"
    );
    assert_eq!(h.stats.totals().malformed, 2);
    h.stop().await;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presses_sent_before_the_round_message_is_read_still_score() {
    let s = Stack::new().await;
    let users: Vec<String> = (0..10).map(|i| format!("early-{i}")).collect();
    s.seed_users(&users).await;
    let h = s.spawn_handler().await;
    // Wait until the handler is up and storing presses (a press by nobody is kept pending).
    s.press.send(&s.sqs, &press("probe-nobody")).await;
    wait_for("handler running", Duration::from_secs(30), || async {
        h.stats.totals().pending == 1
    })
    .await;
    // The round opened a moment ago, but its timestamp message arrives only after the presses
    // were received.
    let opens = now_ms() - 500;
    s.send_all(
        &s.press,
        &users.iter().map(|u| press(u)).collect::<Vec<_>>(),
    )
    .await;
    // The round's message follows (in production it always comes first): the presses are judged
    // without it (no round), stored, and judged again once it is recorded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closes = opens + 60_000;
    s.timestamp
        .send(
            &s.sqs,
            &format!(r#"{{"round_id":"late","opens_at_ms":{opens},"closes_at_ms":{closes}}}"#),
        )
        .await;
    wait_for("all scored", Duration::from_secs(30), || async {
        s.count("SELECT COUNT(*) FROM scores").await == 10
    })
    .await;
    for u in &users {
        assert_eq!(s.score(u).await, Some(1));
    }
    let t = h.stats.totals();
    assert_eq!(
        t.refolded, 10,
        "each player re-folded once the round arrived"
    );
    h.stop().await;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_after_the_window_or_before_any_round_is_rejected() {
    let s = Stack::new().await;
    s.seed_users(&["late".to_string(), "norounds".to_string()])
        .await;
    let h = s.spawn_handler().await;
    s.press.send(&s.sqs, &press("norounds")).await;
    wait_for("judged", Duration::from_secs(20), || async {
        h.stats.totals().rejected == 1
    })
    .await;
    // A round whose window closed 5 s ago.
    s.open_round("old", Duration::from_secs(10), Duration::from_secs(5))
        .await;
    s.wait_rounds(1).await;
    s.press.send(&s.sqs, &press("late")).await;
    wait_for("judged", Duration::from_secs(20), || async {
        h.stats.totals().rejected == 2
    })
    .await;
    assert_eq!(s.score("late").await, Some(0));
    assert_eq!(s.score("norounds").await, Some(0));
    h.stop().await;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaks_grow_across_rounds_and_a_missed_round_resets_them() {
    let s = Stack::new().await;
    s.seed_users(&["steady".to_string(), "misser".to_string()])
        .await;
    let h = s.spawn_handler().await;
    // Three rounds, one second apart; the presses are judged by their SentTimestamp.
    for (i, round) in ["a", "b", "c"].iter().enumerate() {
        s.open_round(round, Duration::ZERO, Duration::from_secs(3))
            .await;
        s.wait_rounds(i as i64 + 1).await;
        s.press.send(&s.sqs, &press("steady")).await;
        if i != 1 {
            s.press.send(&s.sqs, &press("misser")).await;
        }
        wait_for("scored", Duration::from_secs(20), || async {
            s.count("SELECT COUNT(*) FROM scores").await == [2, 3, 5][i]
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    // steady: streaks 1, 2, 3 → 6 points; misser: 1, (missed), 1 → 2 points.
    assert_eq!(s.score("steady").await, Some(6));
    assert_eq!(s.score("misser").await, Some(2));
    h.stop().await;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handlers_on_the_same_queues_give_exact_results() {
    let s = Stack::new().await;
    let users: Vec<String> = (0..300).map(|i| format!("duo-{i:03}")).collect();
    s.seed_users(&users).await;
    s.open_round("r", Duration::from_secs(1), ROUND_WINDOW)
        .await;
    let a = s.spawn_handler().await;
    let b = s.spawn_handler().await;
    let mut bodies: Vec<String> = users.iter().map(|u| press(u)).collect();
    bodies.extend(users.iter().step_by(3).map(|u| press(u)));
    s.send_all(&s.press, &bodies).await;
    wait_for("all scored", Duration::from_secs(60), || async {
        s.count("SELECT COUNT(*) FROM scores").await == 300 && s.depth(&s.press.url).await == 0
    })
    .await;
    let total: i64 = sqlx::query("SELECT CAST(SUM(score) AS SIGNED) FROM users")
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 300, "every player scored exactly once");
    a.stop().await;
    b.stop().await;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_then_restart_scores_everyone_exactly_once() {
    let s = Stack::new().await;
    let users: Vec<String> = (0..1000).map(|i| format!("burst-{i:04}")).collect();
    s.seed_users(&users).await;
    s.open_round("r", Duration::from_secs(1), Duration::from_secs(600))
        .await;
    // 2,000 presses: every player twice.
    let mut bodies: Vec<String> = users.iter().map(|u| press(u)).collect();
    bodies.extend(users.iter().rev().map(|u| press(u)));
    s.send_all(&s.press, &bodies).await;
    let mut child = s.spawn_process(&[("BUTTONPARTY_BATCH_SIZE", "50")]);
    wait_for("some presses applied", Duration::from_secs(60), || async {
        s.count("SELECT COUNT(*) FROM scores").await > 100
    })
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let partial = s.count("SELECT COUNT(*) FROM scores").await;
    assert!(partial < 1000, "killed midway (had {partial})");
    let mut child = s.spawn_process(&[]);
    wait_for("all scored", Duration::from_secs(120), || async {
        s.count("SELECT COUNT(*) FROM scores").await == 1000
    })
    .await;
    wait_for("queue drained", Duration::from_secs(90), || async {
        s.depth(&s.press.url).await == 0
    })
    .await;
    let total: i64 = sqlx::query("SELECT CAST(SUM(score) AS SIGNED) FROM users")
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 1000, "every player scored exactly once");
    assert_eq!(s.depth(&s.press.dlq_url).await, 0, "nothing dead-lettered");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_cut_longer_than_the_redrive_budget_loses_nothing() {
    // Visibility 2 s × 2 receives = a 4 s redrive budget; the database is cut for 10 s.
    let s = Stack::with(QueueOptions {
        visibility_secs: 2,
        max_receive_count: 2,
    })
    .await;
    let users: Vec<String> = (0..50).map(|i| format!("cut-{i:02}")).collect();
    s.seed_users(&users).await;
    let upstream = "127.0.0.1:3306".parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let h = s.spawn_handler_with(s.config(), &proxy.url(&s.db)).await;
    s.open_round("r", Duration::from_secs(1), Duration::from_secs(600))
        .await;
    s.wait_rounds(1).await;
    proxy.cut().await;
    s.send_all(
        &s.press,
        &users.iter().map(|u| press(u)).collect::<Vec<_>>(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        s.count("SELECT COUNT(*) FROM scores").await,
        0,
        "nothing written while cut"
    );
    proxy.restore();
    wait_for(
        "all scored after the outage",
        Duration::from_secs(60),
        || async { s.count("SELECT COUNT(*) FROM scores").await == 50 },
    )
    .await;
    wait_for("queue drained", Duration::from_secs(30), || async {
        s.depth(&s.press.url).await == 0
    })
    .await;
    assert_eq!(
        s.depth(&s.press.dlq_url).await,
        0,
        "nothing dead-lettered through the outage"
    );
    h.stop().await;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn powerups_need_points_and_a_repeated_request_applies_once() {
    let s = Stack::new().await;
    s.seed_users(&["rich".to_string(), "poor".to_string()])
        .await;
    // A score earned before (the state the fold goes on from).
    sqlx::query("UPDATE users SET score = 200 WHERE username = 'rich'")
        .execute(&s.db.pool)
        .await
        .unwrap();
    s.open_round("r", Duration::from_secs(1), ROUND_WINDOW)
        .await;
    let h = s.spawn_handler().await;
    s.wait_rounds(1).await;
    let buy = |user: &str, kind: &str, q: f64, req: &str| {
        serde_json::json!({"username": user, "powerUpType": kind, "quantity": q, "request_id": req})
            .to_string()
    };
    s.send_all(
        &s.powerup,
        &[
            buy("rich", "multiplier", 3.0, "a"), // tier 2: 150
            buy("rich", "MULTIPLIER", 3.0, "a"), // the client's retry: once
            buy("poor", "FREEZE", 6.0, "b"),     // 60 > 0: rejected
        ],
    )
    .await;
    // Sent after those (purchases sent in the same millisecond are ordered by message id).
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.powerup
        .send(
            &s.sqs,
            &serde_json::json!({"username": "rich", "powerUpType": "EXTENDER", "level": 1.5})
                .to_string(), // 60 > 50: rejected
        )
        .await;
    wait_for("judged", Duration::from_secs(30), || async {
        s.depth(&s.powerup.url).await == 0
    })
    .await;
    assert_eq!(s.score("rich").await, Some(50));
    assert_eq!(s.score("poor").await, Some(0));
    let row = sqlx::query("SELECT kind, tier, expires_at_ms - starts_at_ms FROM powerups")
        .fetch_all(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(row.len(), 1);
    assert_eq!(row[0].get::<String, _>(0), "MULTIPLIER");
    assert_eq!(row[0].get::<u8, _>(1), 2);
    assert_eq!(row[0].get::<i64, _>(2), 6 * 3_600_000);
    // The multiplier counts: a press in the open round now scores 1 × 3.
    s.press.send(&s.sqs, &press("rich")).await;
    wait_for("scored", Duration::from_secs(30), || async {
        s.count("SELECT COUNT(*) FROM scores").await == 1
    })
    .await;
    assert_eq!(s.score("rich").await, Some(53));
    h.stop().await;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_user_registers_the_player_endpoint_and_subscription_once() {
    let s = Stack::new().await;
    let h = s.spawn_handler().await;
    let add =
        |user: &str, token: &str| serde_json::json!({"username": user, "token": token}).to_string();
    s.add_user.send(&s.sqs, &add("ann", "token-ann-1")).await;
    wait_for("registered", Duration::from_secs(30), || async {
        s.count("SELECT COUNT(*) FROM push_endpoints WHERE subscription_arn IS NOT NULL")
            .await
            == 1
    })
    .await;
    assert_eq!(s.score("ann").await, Some(0));
    let first: (String, String) = {
        let r = sqlx::query("SELECT endpoint_arn, subscription_arn FROM push_endpoints")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    // The same message again changes nothing.
    s.add_user.send(&s.sqs, &add("ann", "token-ann-1")).await;
    wait_for("processed", Duration::from_secs(30), || async {
        h.stats.totals().applied >= 2 && s.depth(&s.add_user.url).await == 0
    })
    .await;
    let subs = s
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(&s.topic_arn)
        .send()
        .await
        .unwrap()
        .subscriptions
        .unwrap_or_default();
    assert_eq!(subs.len(), 1, "subscribed once");
    // A new token updates the same endpoint.
    s.add_user.send(&s.sqs, &add("ann", "token-ann-2")).await;
    wait_for("processed", Duration::from_secs(30), || async {
        h.stats.totals().applied >= 3 && s.depth(&s.add_user.url).await == 0
    })
    .await;
    let attrs = s
        .sns
        .get_endpoint_attributes()
        .endpoint_arn(&first.0)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    assert_eq!(attrs.get("Token").map(String::as_str), Some("token-ann-2"));
    assert_eq!(attrs.get("Enabled").map(String::as_str), Some("true"));
    let r = sqlx::query("SELECT endpoint_arn, subscription_arn FROM push_endpoints")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!((r.get::<String, _>(0), r.get::<String, _>(1)), first);
    h.stop().await;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_mode_takes_the_player_from_the_message_attribute() {
    let s = Stack::new().await;
    s.seed_users(&["verified-sub".to_string(), "mallory".to_string()])
        .await;
    s.open_round("r", Duration::from_secs(1), ROUND_WINDOW)
        .await;
    let mut config = s.config();
    config.identity_attribute = Some("sub".into());
    let h = s.spawn_handler_with(config, &s.db.url).await;
    let attr = aws_sdk_sqs::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value("verified-sub")
        .build()
        .unwrap();
    s.sqs
        .send_message()
        .queue_url(&s.press.url)
        .message_body(press("mallory"))
        .message_attributes("sub", attr)
        .send()
        .await
        .unwrap();
    // Without the attribute: malformed.
    s.press.send(&s.sqs, &press("mallory")).await;
    wait_for("judged", Duration::from_secs(30), || async {
        s.depth(&s.press.url).await == 0 && s.count("SELECT COUNT(*) FROM scores").await == 1
    })
    .await;
    assert_eq!(s.score("verified-sub").await, Some(1));
    assert_eq!(s.score("mallory").await, Some(0));
    assert_eq!(s.drain_dlq(&s.press.dlq_url).await.len(), 1);
    h.stop().await;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_presses_arriving_while_others_wait_are_settled_without_redelivery() {
    // Regression: with deferred presses waiting, a batch being filled (250 ms linger) must not be
    // dropped by the processor's wake-up timer; dropped presses came back only after the
    // visibility timeout.
    let s = Stack::new().await;
    let users: Vec<String> = (0..40).map(|i| format!("late-{i:02}")).collect();
    s.seed_users(&users).await;
    let mut config = s.config();
    config.batch_linger = Duration::from_millis(250);
    let h = s.spawn_handler_with(config, &s.db.url).await;
    s.open_round("closed", Duration::from_secs(10), Duration::from_secs(5))
        .await;
    s.wait_rounds(1).await;
    for u in &users {
        s.press.send(&s.sqs, &press(u)).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Well inside the 30 s visibility timeout.
    wait_for(
        "every late press judged",
        Duration::from_secs(15),
        || async { h.stats.totals().rejected == 40 },
    )
    .await;
    let t = h.stats.totals();
    assert_eq!(t.redelivered, 0);
    assert_eq!(t.applied, 1, "only the round");
    h.stop().await;
    s.cleanup().await;
}

/// Presses that arrive while the handler stops are returned by its outstanding long polls. They
/// go back to the queue once, when every receiver has stopped: released at once, each was taken
/// again by another receiver's poll and released again, and five such round trips sent valid
/// presses to the dead-letter queue (fault scenario 2, seen in a CI rehearsal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presses_received_while_stopping_go_back_to_the_queue_once() {
    let s = Stack::new().await;
    let h = s.spawn_handler().await;
    // Every receiver is in its long poll on the empty queues.
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.shutdown.cancel();
    let bodies: Vec<String> = (0..3).map(|i| press(&format!("late-{i}"))).collect();
    s.send_all(&s.press, &bodies).await;
    tokio::time::timeout(Duration::from_secs(30), h.task)
        .await
        .expect("handler stops within 30 s")
        .expect("handler task")
        .expect("handler ran without error");
    assert_eq!(s.depth(&s.press.dlq_url).await, 0, "nothing dead-lettered");
    let out = s
        .sqs
        .receive_message()
        .queue_url(&s.press.url)
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
        )
        .send()
        .await
        .unwrap();
    let counts: Vec<u32> = out
        .messages()
        .iter()
        .map(|m| {
            m.attributes()
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(counts.len(), 3, "every press is back in the queue");
    assert!(
        counts.iter().all(|&c| c <= 2),
        "each taken by the stopping handler at most once (then by this receive): {counts:?}"
    );
    s.cleanup().await;
}
