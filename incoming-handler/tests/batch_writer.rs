//! The press batch writer against a real database, for rules that need history.

use buttonparty::testing::TestDb;
use incoming_handler::batch_writer::{PressInput, Verdict, apply_presses};
use sqlx::Row;

const H: i64 = 3_600_000;
const T0: i64 = 1_800_000_000_000;

async fn round(db: &TestDb, id: &str, opens: i64) {
    sqlx::query("INSERT INTO rounds (round_id, opens_at_ms, closes_at_ms, recorded_at_ms) VALUES (?, ?, ?, 0)")
        .bind(id.as_bytes())
        .bind(opens)
        .bind(opens + 60_000)
        .execute(&db.pool)
        .await
        .unwrap();
}

async fn grant(db: &TestDb, key: &str, kind: &str, tier: u8, starts: i64, hours: i64) {
    sqlx::query(
        "INSERT INTO powerups (username, request_key, kind, tier, price, starts_at_ms, expires_at_ms, message_id) \
         VALUES ('ann', ?, ?, ?, 0, ?, ?, 'm')",
    )
    .bind(key.as_bytes())
    .bind(kind)
    .bind(tier)
    .bind(starts)
    .bind(starts + hours * H)
    .execute(&db.pool)
    .await
    .unwrap();
}

async fn press(db: &TestDb, at: i64, id: &str) -> Verdict {
    let v = apply_presses(
        &db.pool,
        &[PressInput {
            username: "ann",
            press_at: at,
            message_id: id,
        }],
    )
    .await
    .unwrap();
    v[0]
}

#[tokio::test]
async fn a_freeze_replaced_by_a_shorter_one_does_not_excuse_rounds_after_the_shorter_one_expired() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO users (username, score, streak, created_at_ms) VALUES ('ann', 0, 0, 0)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // A 48 h freeze at T0, replaced one hour later by a 6 h freeze (which ends at T0 + 7 h).
    grant(&db, "a", "FREEZE", 4, T0, 48).await;
    grant(&db, "b", "FREEZE", 1, T0 + H, 6).await;
    round(&db, "r1", T0 + 2 * H).await;
    round(&db, "r2", T0 + 10 * H).await; // missed, no freeze active any more
    round(&db, "r3", T0 + 20 * H).await;
    round(&db, "r4", T0 + 21 * H).await;
    assert!(
        matches!(press(&db, T0 + 2 * H + 1000, "p1").await, Verdict::Scored(s) if s.new_streak == 1)
    );
    let Verdict::Scored(s) = press(&db, T0 + 20 * H + 1000, "p3").await else {
        panic!("scores");
    };
    assert_eq!(
        s.new_streak, 1,
        "r2 was missed and the replaced 48 h freeze no longer covered it"
    );
    let Verdict::Scored(s) = press(&db, T0 + 21 * H + 1000, "p4").await else {
        panic!("scores");
    };
    assert_eq!(s.new_streak, 2);
    let score: i64 = sqlx::query("SELECT score FROM users WHERE username = 'ann'")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(score, 1 + 1 + 2);
    db.drop_db().await;
}

#[tokio::test]
async fn a_freeze_excuses_missed_rounds_and_a_multiplier_multiplies() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO users (username, score, streak, created_at_ms) VALUES ('ann', 0, 0, 0)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    round(&db, "r1", T0).await;
    round(&db, "r2", T0 + 2 * H).await; // missed, but frozen
    round(&db, "r3", T0 + 4 * H).await;
    assert!(matches!(press(&db, T0 + 1000, "p1").await, Verdict::Scored(s) if s.new_streak == 1));
    grant(&db, "f", "FREEZE", 1, T0 + H, 6).await;
    grant(&db, "m", "MULTIPLIER", 4, T0 + 3 * H, 6).await; // ×10
    let Verdict::Scored(s) = press(&db, T0 + 4 * H + 1000, "p3").await else {
        panic!("scores");
    };
    assert_eq!((s.new_streak, s.points), (2, 20));
    // The same press again (a redelivery) is a duplicate.
    assert_eq!(
        press(&db, T0 + 4 * H + 1000, "p3").await,
        Verdict::Rejected(buttonparty::rules::RejectReason::AlreadyScored)
    );
    db.drop_db().await;
}
