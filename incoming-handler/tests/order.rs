//! The game is a fold of events in send order (SPEC §3 "Order of events", §9 "No message
//! waits"): whatever order, delay or duplication the four queues deliver messages in, the state
//! comes out as if they had been applied in the order they were sent — on the real LocalStack
//! and MariaDB.

mod common;

use std::time::Duration;

use buttonparty::fold::Message;
use common::history::{self, Body, differences};
use common::{Stack, now_ms, press, wait_for};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn round_body(id: &str, opens: i64, closes: i64) -> String {
    format!(r#"{{"round_id":"{id}","opens_at_ms":{opens},"closes_at_ms":{closes}}}"#)
}

fn add_user(name: &str, token: &str) -> String {
    serde_json::json!({"username": name, "token": token}).to_string()
}

/// 1a. A round message held by a consumer that crashed (invisible for the visibility timeout):
/// the presses of that round are stored meanwhile and score once it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_message_held_by_a_crashed_consumer_still_scores_its_presses() {
    let s = Stack::new().await;
    let users: Vec<String> = (0..20).map(|i| format!("held-{i}")).collect();
    s.seed_users(&users).await;
    let opens = now_ms() - 1_000;
    s.send_one(&s.timestamp, &round_body("held", opens, opens + 60_000))
        .await;
    assert_eq!(s.hold(&s.timestamp, 10).await.len(), 1);
    let h = s.spawn_handler().await;
    s.send_all(
        &s.press,
        &users.iter().map(|u| press(u)).collect::<Vec<_>>(),
    )
    .await;
    wait_for(
        "presses stored without their round",
        Duration::from_secs(20),
        || async {
            s.count("SELECT COUNT(*) FROM player_events WHERE outcome = 'no_round'")
                .await
                == 20
        },
    )
    .await;
    // Stored, then deleted: every press leaves the queue while its round is still held.
    wait_for(
        "no press waits in flight",
        Duration::from_secs(5),
        || async { s.depth(&s.press.url).await == 0 },
    )
    .await;
    assert_eq!(
        s.count("SELECT COUNT(*) FROM rounds").await,
        0,
        "the presses left the queue before their round message came back"
    );
    wait_for(
        "the round, then every press scored",
        Duration::from_secs(30),
        || async { s.count("SELECT COUNT(*) FROM scores").await == 20 },
    )
    .await;
    for u in &users {
        assert_eq!(s.score(u).await, Some(1), "{u}");
    }
    assert_eq!(h.stats.totals().refolded, 20);
    h.stop().await;
    s.cleanup().await;
}

/// 1b. A registration held by a crashed consumer: the player's press is kept pending, and
/// scores once the registration arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_held_by_a_crashed_consumer_still_scores_the_press_sent_after_it() {
    let s = Stack::new().await;
    s.send_one(&s.add_user, &add_user("late-reg", "token-late-reg"))
        .await;
    assert_eq!(s.hold(&s.add_user, 6).await.len(), 1);
    s.open_round("r", Duration::from_secs(1), Duration::from_secs(60))
        .await;
    let h = s.spawn_handler().await;
    s.wait_rounds(1).await;
    s.press.send(&s.sqs, &press("late-reg")).await;
    wait_for("press kept pending", Duration::from_secs(20), || async {
        h.stats.totals().pending == 1 && s.depth(&s.press.url).await == 0
    })
    .await;
    assert_eq!(s.score("late-reg").await, None);
    wait_for("registered and scored", Duration::from_secs(30), || async {
        s.score("late-reg").await == Some(1)
    })
    .await;
    h.stop().await;
    s.cleanup().await;
}

/// 2. A multiplier bought 300 ms before a press, queued behind 300 other purchases: the press
/// is doubled whichever the handler applies first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiplier_bought_just_before_a_press_applies_behind_300_queued_purchases() {
    let s = Stack::new().await;
    let buyers: Vec<String> = (0..300).map(|i| format!("buyer-{i:03}")).collect();
    s.seed_users(&buyers).await;
    s.seed_users(&["ann".to_string()]).await;
    s.seed_score("ann", 100).await;
    s.open_round("r", Duration::from_secs(1), Duration::from_secs(60))
        .await;
    let h = s.spawn_handler().await;
    s.wait_rounds(1).await;
    let buy = |u: &str| {
        serde_json::json!({"username": u, "powerUpType": "FREEZE", "quantity": 6}).to_string()
    };
    s.send_all(
        &s.powerup,
        &buyers.iter().map(|u| buy(u)).collect::<Vec<_>>(),
    )
    .await;
    s.send_one(
        &s.powerup,
        &serde_json::json!({"username": "ann", "powerUpType": "MULTIPLIER", "quantity": 2})
            .to_string(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.press.send(&s.sqs, &press("ann")).await;
    wait_for("everything applied", Duration::from_secs(60), || async {
        s.depth(&s.powerup.url).await == 0 && s.depth(&s.press.url).await == 0
    })
    .await;
    // 100 − 60 for the multiplier, + 1 point × 2.
    wait_for("ann's press doubled", Duration::from_secs(10), || async {
        s.score("ann").await == Some(42)
    })
    .await;
    h.stop().await;
    s.cleanup().await;
}

/// 2b. The other way round: a purchase paid by a press sent just before it is not refused,
/// even when the purchase is applied first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_paid_by_a_press_sent_just_before_it_is_not_refused() {
    let s = Stack::new().await;
    s.seed_users(&["bea".to_string()]).await;
    s.seed_score("bea", 59).await;
    s.open_round("r", Duration::from_secs(1), Duration::from_secs(60))
        .await;
    // The press first, held by a crashed consumer; the purchase 50 ms later is applied first.
    s.press.send(&s.sqs, &press("bea")).await;
    assert_eq!(s.hold(&s.press, 5).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.send_one(
        &s.powerup,
        &serde_json::json!({"username": "bea", "powerUpType": "EXTENDER", "quantity": 1.5})
            .to_string(),
    )
    .await;
    let h = s.spawn_handler().await;
    wait_for("purchase judged", Duration::from_secs(20), || async {
        s.depth(&s.powerup.url).await == 0
    })
    .await;
    assert_eq!(s.score("bea").await, Some(59), "refused for now: 59 < 60");
    wait_for(
        "the press, then the purchase re-judged",
        Duration::from_secs(30),
        || async { s.score("bea").await == Some(0) },
    )
    .await;
    let bought = s
        .count("SELECT COUNT(*) FROM powerups WHERE username = 'bea' AND kind = 'EXTENDER'")
        .await;
    assert_eq!(bought, 1);
    h.stop().await;
    s.cleanup().await;
}

/// 3. A press redelivered after the next round's press was applied counts for its own round
/// and for the streak: 1 + 2 points, not 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_redelivered_after_the_next_rounds_press_keeps_the_streak() {
    let s = Stack::new().await;
    s.seed_users(&["cy".to_string()]).await;
    let t = now_ms();
    s.send_one(&s.timestamp, &round_body("r1", t - 1_000, t + 1_500))
        .await;
    s.send_one(&s.timestamp, &round_body("r2", t + 2_000, t + 60_000))
        .await;
    s.press.send(&s.sqs, &press("cy")).await; // in r1
    let held = s.hold(&s.press, 8).await;
    assert_eq!(held.len(), 1);
    assert!(held[0].1 < t + 1_500, "sent inside r1");
    let h = s.spawn_handler().await;
    s.wait_rounds(2).await;
    let wait = (t + 2_100 - now_ms()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    s.press.send(&s.sqs, &press("cy")).await; // in r2
    wait_for("r2's press applied", Duration::from_secs(20), || async {
        s.score("cy").await == Some(1)
    })
    .await;
    wait_for(
        "r1's press redelivered and folded in",
        Duration::from_secs(30),
        || async { s.score("cy").await == Some(3) },
    )
    .await;
    let streak: u32 = sqlx::query_scalar("SELECT streak FROM users WHERE username = 'cy'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(streak, 2);
    h.stop().await;
    s.cleanup().await;
}

/// 4. 2,600 presses under names nobody registered never stall the other queues: a
/// registration, a round and a real press are applied within seconds — with the default
/// settings and with BUTTONPARTY_MAX_IN_FLIGHT at its minimum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presses_by_unknown_names_never_stall_the_other_queues() {
    for max_in_flight in [2000usize, 10] {
        let s = Stack::new().await;
        let mut config = s.config();
        config.max_in_flight = max_in_flight;
        config.press_receivers = 8;
        let h = s.spawn_handler_with(config, &s.db.url).await;
        let flood: Vec<String> = (0..2_600).map(|i| press(&format!("ghost-{i}"))).collect();
        s.send_all(&s.press, &flood).await;
        wait_for(
            "the flood is being stored",
            Duration::from_secs(30),
            || async { h.stats.totals().pending > 0 },
        )
        .await;
        let started = std::time::Instant::now();
        s.add_user
            .send(&s.sqs, &add_user("real", "token-real"))
            .await;
        s.open_round("r", Duration::from_secs(1), Duration::from_secs(60))
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.press.send(&s.sqs, &press("real")).await;
        // The other queues are not held up by the flood.
        wait_for(
            &format!("registration and round applied (max in flight {max_in_flight})"),
            Duration::from_secs(5),
            || async {
                s.score("real").await.is_some() && s.count("SELECT COUNT(*) FROM rounds").await == 1
            },
        )
        .await;
        let others = started.elapsed().as_secs_f64();
        // The real press comes after the flood in its own queue: it is applied as soon as the
        // handler reaches it, at the handler's pace for that setting.
        let patience = if max_in_flight >= 2000 { 20 } else { 30 };
        wait_for(
            &format!("the real press applied (max in flight {max_in_flight})"),
            Duration::from_secs(patience),
            || async { s.score("real").await == Some(1) },
        )
        .await;
        eprintln!(
            "max_in_flight={max_in_flight}: registration and round applied {others:.1} s after they were sent; the press behind the flood {:.1} s",
            started.elapsed().as_secs_f64()
        );
        wait_for(
            "the whole flood stored",
            Duration::from_secs(120),
            || async { s.depth(&s.press.url).await == 0 },
        )
        .await;
        assert_eq!(
            s.count("SELECT COUNT(*) FROM player_events WHERE outcome IS NULL")
                .await,
            2_600,
            "every ghost press kept, pending"
        );
        h.stop().await;
        s.cleanup().await;
    }
}

/// An older registration redelivered after a newer one (FCM rotated the token) leaves the
/// endpoint on the newer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_keeps_the_token_of_the_latest_sent_registration() {
    let s = Stack::new().await;
    s.send_one(&s.add_user, &add_user("dan", "token-dan-old"))
        .await;
    assert_eq!(s.hold(&s.add_user, 5).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.send_one(&s.add_user, &add_user("dan", "token-dan-new"))
        .await;
    let h = s.spawn_handler().await;
    wait_for(
        "both registrations applied",
        Duration::from_secs(30),
        || async { s.depth(&s.add_user.url).await == 0 && h.stats.totals().applied >= 2 },
    )
    .await;
    let endpoint: String =
        sqlx::query_scalar("SELECT endpoint_arn FROM push_endpoints WHERE username = 'dan'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    let attrs = s
        .sns
        .get_endpoint_attributes()
        .endpoint_arn(&endpoint)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    assert_eq!(
        attrs.get("Token").map(String::as_str),
        Some("token-dan-new")
    );
    assert_eq!(attrs.get("Enabled").map(String::as_str), Some("true"));
    h.stop().await;
    s.cleanup().await;
}

/// The model test: two handlers; a few hundred messages over the four queues, held back at
/// random like crashed consumers would, some sent twice by their clients. The final state is
/// the fold of every message in send order, computed by the rules crate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handlers_and_random_delays_end_in_the_sorted_fold() {
    let s = Stack::with(common::QueueOptions {
        visibility_secs: 30,
        max_receive_count: 100,
    })
    .await;
    let names: Vec<String> = (0..12).map(|i| format!("m{i:02}")).collect();
    // 12 rounds of 400 ms, 300 ms apart, played in real time.
    let start = now_ms() + 500;
    let plan = history::plan(7, start, &names, 12, 400, 100, 300);
    let mut rng = SmallRng::seed_from_u64(7);
    for p in &plan {
        let wait = p.at - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let queue = match &p.body {
            Body::AddUser { .. } => &s.add_user,
            Body::Press { .. } => &s.press,
            Body::Purchase { .. } => &s.powerup,
            Body::Round { .. } => &s.timestamp,
        };
        let copies = if rng.random_bool(0.1) { 2 } else { 1 };
        for _ in 0..copies {
            s.send_one(queue, &p.body.json()).await;
        }
    }
    // Learn every message's SentTimestamp and id, then leave each invisible for a random while
    // (0–4 s), as crashed consumers would.
    let mut history: Vec<Message> = Vec::new();
    for (queue, kind) in [
        (&s.add_user, "add"),
        (&s.press, "press"),
        (&s.powerup, "powerup"),
        (&s.timestamp, "round"),
    ] {
        for (id, sent, body) in scatter(&s, queue, &mut rng).await {
            history.push(history::to_fold(&body_of(kind, &body), sent, &id));
        }
    }
    assert!(
        history.len() > 200,
        "a few hundred messages: {}",
        history.len()
    );
    if std::env::var("ORDER_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("incoming_handler=debug")
            .with_test_writer()
            .try_init();
    }
    let started = std::time::Instant::now();
    let a = s.spawn_handler().await;
    let b = s.spawn_handler().await;
    wait_for("every queue drained", Duration::from_secs(120), || async {
        let mut depth = 0;
        for q in [&s.add_user, &s.press, &s.powerup, &s.timestamp] {
            depth += s.depth(&q.url).await;
        }
        depth == 0
    })
    .await;
    let mut last = Vec::new();
    for _ in 0..50 {
        last = differences(&s.db.pool, &history).await;
        if last.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !last.is_empty() {
        let rounds: Vec<(i64, i64, Option<i64>, Vec<u8>)> = sqlx::query_as(
            "SELECT opens_at_ms, closes_at_ms, window_ms, round_id FROM rounds ORDER BY opens_at_ms",
        )
        .fetch_all(&s.db.pool)
        .await
        .unwrap();
        for r in rounds {
            eprintln!(
                "round {} {} {:?} {}",
                r.0,
                r.1,
                r.2,
                String::from_utf8_lossy(&r.3)
            );
        }
        for m in &history {
            if let Message::Round(r) = m {
                eprintln!("history round {} {}", r.opens_at, r.closes_at);
            }
        }
    }
    assert!(
        last.is_empty(),
        "differences from the sorted fold:\n{}",
        last.join("\n")
    );
    let (ta, tb) = (a.stats.totals(), b.stats.totals());
    eprintln!(
        "{} messages, delivered 0-4 s late at random to two handlers: the sorted fold after {:.1} s; players re-folded {} + {}",
        history.len(),
        started.elapsed().as_secs_f64(),
        ta.refolded,
        tb.refolded
    );
    a.stop().await;
    b.stop().await;
    s.cleanup().await;
}

fn body_of(kind: &str, body: &str) -> Body {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let name = || v["username"].as_str().unwrap_or_default().to_owned();
    match kind {
        "add" => Body::AddUser {
            username: name(),
            token: v["token"].as_str().unwrap_or_default().to_owned(),
        },
        "press" => Body::Press { username: name() },
        "powerup" => Body::Purchase {
            username: name(),
            kind: buttonparty::rules::PowerupKind::parse(v["powerUpType"].as_str().unwrap())
                .unwrap(),
            level: v["quantity"].as_f64().unwrap(),
            request_id: v["request_id"].as_str().map(str::to_owned),
        },
        _ => {
            let r = buttonparty::messages::parse_round(body.as_bytes()).unwrap();
            Body::Round {
                round_id: r.round_id.clone(),
                round: buttonparty::rules::Round::announced(
                    r.opens_at_ms,
                    r.closes_at_ms,
                    r.window_ms,
                ),
            }
        }
    }
}

/// Receives every message of `queue` (recording its id, SentTimestamp and body) and sets each
/// one's visibility to a random 0–4 s: the queue then delivers them in a scrambled order.
async fn scatter(
    s: &Stack,
    queue: &buttonparty::testing::TestQueue,
    rng: &mut SmallRng,
) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for (id, sent, body, receipt) in s.receive_all(queue, 60).await {
        s.sqs
            .change_message_visibility()
            .queue_url(&queue.url)
            .receipt_handle(receipt)
            .visibility_timeout(rng.random_range(0..=4))
            .send()
            .await
            .unwrap();
        out.push((id, sent, body));
    }
    out
}
