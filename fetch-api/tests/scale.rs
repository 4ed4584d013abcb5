//! Latency experiment with a large leaderboard (ignored by default: it inserts 1,000,000 players).
//!
//! ```text
//! BUTTONPARTY_TEST_DATABASE_URL=mysql://root@127.0.0.1:3306 \
//!   cargo test -p fetch-api --test scale -- --ignored --nocapture
//! ```
//!
//! `BUTTONPARTY_SCALE_PLAYERS` changes the number of players (default 1,000,000). Players are
//! inserted straight into a fresh [`TestDb`] with multi-row inserts; scores are skewed like a
//! real game (a fifth never scored, the rest spread over 0–200,000 with most near the bottom).
//! Then `GET /fetch/lb` and `GET /fetch/self` for players picked uniformly at random (so ranks are
//! uniform over the whole board) are timed over HTTP, one request at a time.

mod common;

use std::time::{Duration, Instant};

use buttonparty::testing::TestDb;
use common::{Seed, Server};

/// A small deterministic generator (SplitMix64), so every run seeds the same board.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn name(i: usize) -> String {
    // Varied lengths and a non-ASCII minority, in no particular order relative to the score.
    match i % 10 {
        0 => format!("Zoë-{i}"),
        1 => format!("{i:x}-button-masher"),
        _ => format!("player-{i:07}"),
    }
}

fn score(rng: &mut SplitMix) -> i64 {
    if rng.unit() < 0.2 {
        0
    } else {
        (rng.unit().powi(4) * 200_000.0) as i64
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<44} n={:<5} p50={:>7.2} ms  p90={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap()),
    );
}

async fn timed_get(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
) -> (Duration, serde_json::Value) {
    let started = Instant::now();
    let response = client.get(url).query(query).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "{url} {query:?}");
    let body: serde_json::Value = response.json().await.unwrap();
    (started.elapsed(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "inserts 1,000,000 players: run with --ignored --nocapture"]
async fn latency_with_a_million_players() {
    let players: usize = std::env::var("BUTTONPARTY_SCALE_PLAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let db = TestDb::new().await;
    let seed = Seed(&db.pool);
    let mut rng = SplitMix(20_261_128);
    let scores: Vec<i64> = (0..players).map(|_| score(&mut rng)).collect();

    let started = Instant::now();
    for chunk_start in (0..players).step_by(2_000) {
        let chunk: Vec<(String, i64)> = (chunk_start..players.min(chunk_start + 2_000))
            .map(|i| (name(i), scores[i]))
            .collect();
        seed.users(&chunk).await;
    }
    sqlx::query("ANALYZE TABLE users")
        .execute(&db.pool)
        .await
        .unwrap();
    println!(
        "inserted {players} players in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let server = Server::for_db(&db).await;
    let client = reqwest::Client::new();
    let lb_url = server.url("/fetch/lb");
    let self_url = server.url("/fetch/self");

    // Warm up the buffer pool and the connection pool.
    for _ in 0..20 {
        timed_get(&client, &lb_url, &[]).await;
    }
    let (_, lb) = timed_get(&client, &lb_url, &[]).await;
    assert_eq!(lb.as_array().unwrap().len(), 10);

    let mut lb_samples = Vec::new();
    for _ in 0..500 {
        lb_samples.push(timed_get(&client, &lb_url, &[]).await.0);
    }
    report("GET /fetch/lb", lb_samples);

    // Uniformly random players: ranks uniform over the board.
    let mut uniform = Vec::new();
    let mut by_rank: Vec<(u64, Duration)> = Vec::new();
    for _ in 0..1_000 {
        let who = name(rng.below(players));
        let (elapsed, body) = timed_get(&client, &self_url, &[("username", &who)]).await;
        uniform.push(elapsed);
        by_rank.push((body["rank"].as_u64().unwrap(), elapsed));
    }
    report("GET /fetch/self (uniform random players)", uniform);
    let n = players as u64;
    for (label, low, high) in [
        ("  of which rank in top 10%", 0, n / 10),
        ("  of which rank 10%-50%", n / 10, n / 2),
        ("  of which rank 50%-80%", n / 2, n * 8 / 10),
        ("  of which rank in bottom 20% (score 0)", n * 8 / 10, n + 1),
    ] {
        let samples: Vec<Duration> = by_rank
            .iter()
            .filter(|(rank, _)| *rank > low && *rank <= high)
            .map(|(_, d)| *d)
            .collect();
        if !samples.is_empty() {
            report(label, samples);
        }
    }

    // The very top and the very bottom.
    let top = lb[0]["username"].as_str().unwrap().to_owned();
    let mut top_samples = Vec::new();
    for _ in 0..200 {
        top_samples.push(timed_get(&client, &self_url, &[("username", &top)]).await.0);
    }
    report("GET /fetch/self (rank 1)", top_samples);
    let last: String = sqlx::query_scalar::<_, Vec<u8>>(
        "SELECT username FROM users ORDER BY score ASC, username DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .map(|bytes| String::from_utf8(bytes).unwrap())
    .unwrap();
    let mut last_samples = Vec::new();
    for _ in 0..100 {
        let (elapsed, body) = timed_get(&client, &self_url, &[("username", &last)]).await;
        assert_eq!(body["rank"].as_u64(), Some(n));
        last_samples.push(elapsed);
    }
    report("GET /fetch/self (last place)", last_samples);

    server.stop().await;

    // The rank statement alone, against counting the players ahead one by one (O(rank)).
    let mut conn = db.pool.acquire().await.unwrap();
    let mut histogram = Vec::new();
    let mut counting = Vec::new();
    for _ in 0..300 {
        let i = rng.below(players);
        let who = name(i);
        let started = Instant::now();
        let a = fetch_api::queries::rank(&mut conn, scores[i], &who)
            .await
            .unwrap();
        histogram.push(started.elapsed());
        let started = Instant::now();
        let b = fetch_api::queries::rank_by_counting(&mut conn, scores[i], &who)
            .await
            .unwrap();
        counting.push(started.elapsed());
        assert_eq!(a, b, "{who}");
    }
    drop(conn);
    report("rank statement: histogram + ties (SQL only)", histogram);
    report("rank statement: counting, O(rank) (SQL only)", counting);

    // What the histogram triggers cost the writer: batches shaped like the incoming handler's
    // (one transaction, a 500-row INSERT … ON DUPLICATE KEY UPDATE raising scores), with the
    // triggers and then without them.
    let mut with_triggers = writer_batches(&db, &mut rng, players).await;
    for trigger in [
        "users_score_prefix_insert",
        "users_score_prefix_update",
        "users_score_prefix_delete",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER {trigger}")))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let mut without = writer_batches(&db, &mut rng, players).await;
    with_triggers.sort();
    without.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "500-row writer batch: with triggers p50={:.1} ms p99={:.1} ms; without p50={:.1} ms p99={:.1} ms",
        ms(percentile(&with_triggers, 0.5)),
        ms(percentile(&with_triggers, 0.99)),
        ms(percentile(&without, 0.5)),
        ms(percentile(&without, 0.99)),
    );
    db.drop_db().await;
}

/// Times 100 writer-like batches: 500 random players each gain 1-100 points in one transaction.
async fn writer_batches(db: &TestDb, rng: &mut SplitMix, players: usize) -> Vec<Duration> {
    let mut samples = Vec::new();
    for _ in 0..100 {
        let mut picked: Vec<usize> = (0..500).map(|_| rng.below(players)).collect();
        picked.sort_unstable();
        picked.dedup();
        let started = Instant::now();
        let mut tx = db.pool.begin().await.unwrap();
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO users (username, score, streak, last_scored_opens_at_ms, created_at_ms) ",
        );
        q.push_values(&picked, |mut row, &i| {
            row.push_bind(name(i).into_bytes())
                .push_bind(1 + rng.below(100) as i64)
                .push_bind(1u32)
                .push_bind(None::<i64>)
                .push_bind(0i64);
        });
        q.push(" ON DUPLICATE KEY UPDATE score = score + VALUES(score), streak = VALUES(streak)");
        q.build().execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        samples.push(started.elapsed());
    }
    samples
}
