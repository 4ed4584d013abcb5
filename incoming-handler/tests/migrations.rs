//! Upgrades of the schema on a database in use: the rank histogram recount with writers running,
//! and the previous version's ledgers converted into events that fold to the same scores.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use buttonparty::db::MIGRATOR;
use buttonparty::testing::TestDb;
use rand::Rng;

/// The histogram migration and its triggers.
const HISTOGRAM: i64 = 20261128000002;
/// The exact recount.
const RECOUNT: i64 = 20261201000001;

async fn histogram_differences(pool: &sqlx::MySqlPool) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT CAST(COUNT(*) AS SIGNED) FROM ( \
           SELECT shift_bits, prefix, players FROM score_prefix_counts WHERE players <> 0 \
           UNION ALL \
           SELECT s.shift_bits, u.score >> s.shift_bits, -COUNT(*) FROM users u \
           JOIN (SELECT 0 AS shift_bits UNION ALL SELECT 8 UNION ALL SELECT 16 UNION ALL \
                 SELECT 24 UNION ALL SELECT 32 UNION ALL SELECT 40 UNION ALL SELECT 48 UNION ALL \
                 SELECT 56) s WHERE u.score >> s.shift_bits > 0 GROUP BY 1, 2 \
         ) d GROUP BY shift_bits, prefix HAVING SUM(players) <> 0",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .len() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_histogram_recount_is_exact_while_writers_change_scores() {
    let db = TestDb::migrated_to(Some(HISTOGRAM)).await;
    let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
        "INSERT INTO users (username, score, streak, created_at_ms) ",
    );
    q.push_values(0..2000, |mut b, i| {
        b.push_bind(format!("u{i:04}").into_bytes())
            .push_bind((i * 37) % 5000)
            .push_bind(0_u32)
            .push_bind(0_i64);
    });
    q.build().execute(&db.pool).await.unwrap();
    // A score changed by a writer of the previous version between the backfill and the
    // triggers: the histogram lost it.
    sqlx::query(
        "UPDATE score_prefix_counts SET players = players + 3 WHERE shift_bits = 0 LIMIT 5",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(histogram_differences(&db.pool).await > 0);
    // Writers keep changing scores while the recount runs.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (pool, stop) = (db.pool.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (user, score) = {
                    let mut rng = rand::rng();
                    (rng.random_range(0..2000), rng.random_range(0..100_000))
                };
                let r = sqlx::query("UPDATE users SET score = ? WHERE username = ?")
                    .bind(score)
                    .bind(format!("u{user:04}").into_bytes())
                    .execute(&pool)
                    .await;
                if r.is_ok() {
                    n += 1;
                }
                if n % 50 == w {
                    tokio::task::yield_now().await;
                }
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    MIGRATOR
        .run_to(RECOUNT, &db.pool)
        .await
        .expect("the recount");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for w in writers {
        writes += w.await.unwrap();
    }
    assert!(writes > 100, "writers ran meanwhile: {writes}");
    assert_eq!(
        histogram_differences(&db.pool).await,
        0,
        "exact after the recount"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_ledgers_become_events_that_fold_to_the_same_scores() {
    let db = TestDb::migrated_to(Some(RECOUNT)).await;
    let h = 3_600_000_i64;
    let t0 = 1_800_000_000_000_i64;
    // ann scored in three rounds in a row (1 + 2 + 3) and bought a MULTIPLIER 2 (60) before the
    // third... which she could not afford then: the old ledger says what was applied.
    for i in 0..3 {
        sqlx::query("INSERT INTO rounds (round_id, opens_at_ms, closes_at_ms, recorded_at_ms) VALUES (?, ?, ?, 0)")
            .bind(format!("r{i}").into_bytes())
            .bind(t0 + i * h)
            .bind(t0 + i * h + 60_000)
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO scores (username, round_opens_at_ms, round_id, pressed_at_ms, streak, points, message_id) \
             VALUES ('ann', ?, ?, ?, ?, ?, ?)",
        )
        .bind(t0 + i * h)
        .bind(format!("r{i}").into_bytes())
        .bind(t0 + i * h + 1_000)
        .bind(i + 1)
        .bind(i + 1)
        .bind(format!("p{i}").into_bytes())
        .execute(&db.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO users (username, score, streak, last_scored_opens_at_ms, created_at_ms) \
         VALUES ('ann', 6, 3, ?, 0)",
    )
    .bind(t0 + 2 * h)
    .execute(&db.pool)
    .await
    .unwrap();
    MIGRATOR
        .run(&db.pool)
        .await
        .expect("the event-fold migration");
    let marked: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE refold_from_ms IS NOT NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(marked, 1, "players with history are marked for a re-fold");
    while incoming_handler::ledger::refold_marked(&db.pool, 100, 0)
        .await
        .unwrap()
        .is_some()
    {}
    let (score, streak): (i64, u32) =
        sqlx::query_as("SELECT score, streak FROM users WHERE username = 'ann'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((score, streak), (6, 3));
    let scored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scores WHERE username = 'ann'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(scored, 3, "the view shows the converted ledger");
    db.drop_db().await;
}
