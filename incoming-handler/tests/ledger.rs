//! The ledger (the database side of the fold) against a real database: histories delivered in
//! any order, with duplicates, in any split into batches, by one or two writers at once, end in
//! the state of the fold in send order.

mod common;

use std::time::Duration;

use buttonparty::fold::{Event, EventId, Message};
use buttonparty::rules::{HOUR_MS, Round};
use buttonparty::testing::TestDb;
use common::history::{self, differences};
use incoming_handler::ledger::{self, EventResult, NewEvent, NewRegistration};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::MySqlPool;

const T0: i64 = 1_800_000_000_000;

/// Retries a ledger call on deadlocks and lock waits, as the handler's retrier does.
async fn retry<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    for _ in 0..50 {
        match f().await {
            Ok(v) => return v,
            Err(e) if matches!(buttonparty::db::error_number(&e), Some(1213 | 1205)) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("ledger: {e}"),
        }
    }
    panic!("still deadlocked after 50 attempts");
}

/// Applies one batch of messages as the handler's consumers would.
async fn deliver(pool: &MySqlPool, batch: &[Message]) {
    let mut events = Vec::new();
    let mut regs = Vec::new();
    for m in batch {
        match m {
            Message::Round(r) => {
                let id = format!("r{}", r.opens_at);
                retry(|| ledger::record_round(pool, &id, r, 0)).await;
                retry(|| ledger::mark_round(pool, r.opens_at, 2)).await;
            }
            Message::Register { name, id } => regs.push(NewRegistration {
                username: name.clone(),
                id: id.clone(),
                token: format!("token-{name}"),
            }),
            Message::Player { name, event } => events.push(NewEvent {
                username: name.clone(),
                event: event.clone(),
                received_at_ms: 0,
            }),
        }
    }
    if !regs.is_empty() {
        retry(|| ledger::apply(pool, &[], &regs, &[], 0)).await;
    }
    if !events.is_empty() {
        retry(|| ledger::apply(pool, &events, &[], &[], 0)).await;
    }
}

async fn refold_all(pool: &MySqlPool) {
    while retry(|| ledger::refold_marked(pool, 3, 0)).await.is_some() {}
}

fn history_of(seed: u64) -> Vec<Message> {
    let names: Vec<String> = (0..5).map(|i| format!("p{i}-{seed}")).collect();
    // Each history in its own stretch of time: the rounds of one do not fall inside another's.
    let start = T0 + seed as i64 * 100 * 24 * HOUR_MS;
    let plan = history::plan(seed, start, &names, 20, 60_000, 20_000, HOUR_MS / 2);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    plan.iter()
        .map(|p| {
            let id = format!("{:08x}-{:04x}", rng.random::<u32>(), rng.random::<u16>());
            history::to_fold(&p.body, p.at, &id)
        })
        .collect()
}

/// Every message once or more, shuffled, in batches of 1–12.
fn delivery(history: &[Message], seed: u64) -> Vec<Vec<Message>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut all: Vec<Message> = history
        .iter()
        .flat_map(|m| std::iter::repeat_n(m.clone(), if rng.random_bool(0.3) { 2 } else { 1 }))
        .collect();
    all.shuffle(&mut rng);
    let mut batches = Vec::new();
    while !all.is_empty() {
        let n = rng.random_range(1..=12).min(all.len());
        batches.push(all.drain(..n).collect());
    }
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_duplicated_batched_deliveries_end_in_the_sorted_fold() {
    let db = TestDb::new().await;
    for seed in 0..12 {
        let h = history_of(seed);
        for (i, batch) in delivery(&h, seed).iter().enumerate() {
            deliver(&db.pool, batch).await;
            if i % 4 == 3 {
                refold_all(&db.pool).await;
            }
        }
        refold_all(&db.pool).await;
        let diffs = differences(&db.pool, &h).await;
        assert!(diffs.is_empty(), "seed {seed}:\n{}", diffs.join("\n"));
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_at_once_end_in_the_sorted_fold() {
    let db = TestDb::new().await;
    for seed in 100..106 {
        let h = history_of(seed);
        let batches = delivery(&h, seed);
        let (a, b): (Vec<_>, Vec<_>) = batches
            .into_iter()
            .enumerate()
            .partition(|(i, _)| i % 2 == 0);
        let run = |part: Vec<(usize, Vec<Message>)>| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                for (i, batch) in part {
                    deliver(&pool, &batch).await;
                    if i % 3 == 0 {
                        refold_all(&pool).await;
                    }
                }
                refold_all(&pool).await;
            })
        };
        let (x, y) = tokio::join!(run(a), run(b));
        x.unwrap();
        y.unwrap();
        refold_all(&db.pool).await;
        let diffs = differences(&db.pool, &h).await;
        assert!(diffs.is_empty(), "seed {seed}:\n{}", diffs.join("\n"));
    }
    db.drop_db().await;
}

#[tokio::test]
async fn in_order_events_continue_the_fold_and_a_redelivery_is_a_duplicate() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let reg = NewRegistration {
        username: "ann".into(),
        id: EventId::new(T0 - 10, "reg"),
        token: "t".into(),
    };
    let a = ledger::apply(pool, &[], &[reg], &[], 0).await.unwrap();
    assert_eq!(a.created, [true]);
    ledger::record_round(pool, "r1", &Round::new(T0, 60_000), 0)
        .await
        .unwrap();
    let press = |at: i64, id: &str| NewEvent {
        username: "ann".into(),
        event: Event {
            id: EventId::new(at, id),
            action: buttonparty::fold::Action::Press,
        },
        received_at_ms: 0,
    };
    let a = ledger::apply(
        pool,
        &[press(T0 + 5, "p1"), press(T0 + 6, "p2")],
        &[],
        &[],
        0,
    )
    .await
    .unwrap();
    assert_eq!(
        a.refolded, 0,
        "events in order continue from the player's state"
    );
    assert!(matches!(a.results[0], EventResult::Judged(v) if v.took_effect()));
    assert_eq!(a.results[1], EventResult::Dropped);
    let again = ledger::apply(pool, &[press(T0 + 5, "p1")], &[], &[], 0)
        .await
        .unwrap();
    assert_eq!(again.results, [EventResult::Duplicate]);
    let score: i64 = sqlx::query_scalar("SELECT score FROM users WHERE username = 'ann'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(score, 1);
    // A name nobody registered: kept, pending; then its registration judges it.
    let bob = NewEvent {
        username: "bob".into(),
        ..press(T0 + 7, "b1")
    };
    let a = ledger::apply(pool, &[bob], &[], &[], 0).await.unwrap();
    assert_eq!(a.results, [EventResult::Pending]);
    let reg = NewRegistration {
        username: "bob".into(),
        id: EventId::new(T0 - 1, "regb"),
        token: "t".into(),
    };
    let a = ledger::apply(pool, &[], &[reg], &[], 0).await.unwrap();
    assert_eq!((a.created.as_slice(), a.refolded), (&[true][..], 1));
    let score: i64 = sqlx::query_scalar("SELECT score FROM users WHERE username = 'bob'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(score, 1);
    db.drop_db().await;
}

#[tokio::test]
async fn the_latest_sent_token_wins_whatever_the_delivery_order() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let reg = |at: i64, id: &str, token: &str| NewRegistration {
        username: "cy".into(),
        id: EventId::new(at, id),
        token: token.into(),
    };
    ledger::apply(pool, &[], &[reg(T0 + 100, "new", "token-new")], &[], 0)
        .await
        .unwrap();
    ledger::apply(pool, &[], &[reg(T0, "old", "token-old")], &[], 0)
        .await
        .unwrap();
    ledger::apply(pool, &[], &[reg(T0 + 100, "new", "token-new")], &[], 0)
        .await
        .unwrap();
    let (token, at, registered): (Vec<u8>, i64, i64) = sqlx::query_as(
        "SELECT p.token, p.token_sent_at_ms, u.registered_at_ms FROM push_endpoints p \
         JOIN users u USING (username) WHERE username = 'cy'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((token.as_slice(), at), (&b"token-new"[..], T0 + 100));
    assert_eq!(
        registered, T0,
        "the player exists from the earliest registration"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_purchase_with_a_long_request_id_is_stored() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let reg = NewRegistration {
        username: "dee".into(),
        id: EventId::new(T0 - 10, "reg"),
        token: "t".into(),
    };
    ledger::apply(pool, &[], &[reg], &[], 0).await.unwrap();
    let long = "é".repeat(128);
    let buy = NewEvent {
        username: "dee".into(),
        event: Event {
            id: EventId::new(T0, "buy"),
            action: buttonparty::fold::Action::Purchase {
                powerup: buttonparty::rules::Powerup::new(
                    buttonparty::rules::PowerupKind::Freeze,
                    buttonparty::rules::Tier::new(1).unwrap(),
                ),
                request_key: buttonparty::fold::request_key(Some(&long), "buy"),
            },
        },
        received_at_ms: 0,
    };
    let a = ledger::apply(pool, &[buy], &[], &[], 0).await.unwrap();
    assert_eq!(
        a.results,
        [EventResult::Judged(
            buttonparty::fold::Verdict::PurchaseRefused(
                buttonparty::fold::PurchaseRefusal::InsufficientPoints
            )
        )]
    );
    db.drop_db().await;
}
