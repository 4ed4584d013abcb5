//! The local server over HTTP against a real MariaDB (a fresh [`TestDb`] per test): players,
//! rounds, ledger entries and powerups are seeded with SQL the way the incoming handler stores
//! them, and the API is queried with reqwest.
//!
//! Needs `BUTTONPARTY_TEST_DATABASE_URL` (exported by `scripts/test`).

mod common;

use std::time::{Duration, Instant};

use buttonparty::rules::{HOUR_MS, PowerupKind};
use buttonparty::settings::DatabaseSettings;
use buttonparty::testing::TestDb;
use common::{NOW, Seed, Server, WINDOW_MS, get_json, get_self, hours};
use fetch_api::Clock;
use fetch_api::queries;
use serde_json::json;
use sqlx::Row;

#[tokio::test]
async fn self_shows_score_streak_rank_powerups_and_current_round() {
    let db = TestDb::new().await;
    let seed = Seed(&db.pool);
    let open_now = NOW - 10_000;
    seed.round("r1", hours(-6)).await;
    seed.round("r2", hours(-3)).await;
    seed.round("r3", open_now).await;
    // alice scored in r2 and r3 (streak 4 as of r3).
    seed.user("alice", 50, 4, Some(open_now)).await;
    seed.scored("alice", "r2", hours(-3), 3).await;
    seed.scored("alice", "r3", open_now, 4).await;
    // bob leads and has not pressed in r3 yet.
    seed.user("bob", 80, 2, Some(hours(-3))).await;
    seed.scored("bob", "r2", hours(-3), 2).await;
    // alice's purchases: a freeze replaced by a bigger one, an active multiplier, an expired
    // extender and one bought in the future (not started yet).
    seed.powerup("alice", PowerupKind::Freeze, 1, hours(-2))
        .await;
    seed.powerup("alice", PowerupKind::Freeze, 3, hours(-1))
        .await;
    seed.powerup("alice", PowerupKind::Multiplier, 2, hours(-1))
        .await;
    seed.powerup("alice", PowerupKind::Extender, 1, hours(-7))
        .await;
    seed.powerup("alice", PowerupKind::Extender, 4, NOW + 1)
        .await;
    let server = Server::for_db(&db).await;

    let (status, body) = get_self(&server, "alice").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "username": "alice",
            "score": 50,
            "streak": 4,
            "rank": 2,
            "scored_in_current_round": true,
            "powerups": [
                {"type": "FREEZE", "level": 24, "expires_at_ms": hours(-1) + 24 * HOUR_MS},
                {"type": "MULTIPLIER", "level": 3, "expires_at_ms": hours(-1) + 6 * HOUR_MS},
            ],
            "current_round": {"round_id": "r3", "opens_at_ms": open_now, "closes_at_ms": open_now + WINDOW_MS},
        })
    );

    let (status, body) = get_self(&server, "bob").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rank"], 1);
    assert_eq!(
        body["streak"], 2,
        "r3 is the only round since r2: not missed yet"
    );
    assert_eq!(body["scored_in_current_round"], false);
    assert_eq!(body["powerups"], json!([]));
    assert_eq!(body["current_round"]["round_id"], "r3");

    server.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn grants_of_one_type_bought_in_the_same_millisecond_follow_send_order() {
    // Two multipliers sent in the same millisecond: the message id orders them, as in the
    // incoming handler's fold; the later one replaces the earlier.
    let db = TestDb::new().await;
    let seed = Seed(&db.pool);
    seed.user("kim", 10, 0, None).await;
    seed.powerup_message("kim", PowerupKind::Multiplier, 4, hours(-1), "b-second")
        .await;
    seed.powerup_message("kim", PowerupKind::Multiplier, 1, hours(-1), "a-first")
        .await;
    let server = Server::for_db(&db).await;
    let (status, body) = get_self(&server, "kim").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["powerups"][0]["type"], "MULTIPLIER", "{body}");
    assert_eq!(body["powerups"][0]["level"], 10, "{body}");
    server.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn current_round_is_null_once_closed_and_scored_flag_follows_it() {
    let db = TestDb::new().await;
    let seed = Seed(&db.pool);
    seed.round("r1", hours(-1)).await;
    seed.user("ann", 1, 1, Some(hours(-1))).await;
    seed.scored("ann", "r1", hours(-1), 1).await;
    let closes = hours(-1) + WINDOW_MS;

    for (now, open) in [
        (hours(-1) - 1, false),
        (hours(-1), true),
        (closes - 1, true),
        (closes, false),
    ] {
        let store = common::store(&db.settings(), 5_000).await;
        let server = Server::start(store, Clock::Fixed(now)).await;
        let (status, body) = get_self(&server, "ann").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["current_round"].is_object(), open, "at {now}: {body}");
        assert_eq!(body["scored_in_current_round"], open, "at {now}: {body}");
        server.stop().await;
    }
    db.drop_db().await;
}

#[tokio::test]
async fn effective_streak_breaks_on_a_missed_round_unless_a_freeze_excuses_it() {
    let db = TestDb::new().await;
    let seed = Seed(&db.pool);
    for (i, h) in [-10, -8, -6, -4, -2].into_iter().enumerate() {
        seed.round(&format!("r{i}"), hours(h)).await;
    }
    // Scored in the latest round.
    seed.user("latest", 9, 5, Some(hours(-2))).await;
    // Missed only the latest round, which no round has followed yet: still 5.
    seed.user("one-behind", 9, 5, Some(hours(-4))).await;
    // Missed -4, and -2 opened since: broken.
    seed.user("missed", 9, 5, Some(hours(-6))).await;
    // Missed -4 under a 6 h freeze bought at -5: excused.
    seed.user("frozen", 9, 5, Some(hours(-6))).await;
    seed.powerup("frozen", PowerupKind::Freeze, 1, hours(-5))
        .await;
    // Missed -6 and -4 under a freeze from -7 to -1: excused.
    seed.user("frozen-twice", 9, 5, Some(hours(-8))).await;
    seed.powerup("frozen-twice", PowerupKind::Freeze, 1, hours(-7))
        .await;
    // Missed -8 before the freeze started: broken.
    seed.user("frozen-late", 9, 5, Some(hours(-10))).await;
    seed.powerup("frozen-late", PowerupKind::Freeze, 1, hours(-7))
        .await;
    // A 48 h freeze replaced by a 6 h one that ended at -5: -4 is not excused.
    seed.user("replaced", 9, 5, Some(hours(-10))).await;
    seed.powerup("replaced", PowerupKind::Freeze, 4, hours(-12))
        .await;
    seed.powerup("replaced", PowerupKind::Freeze, 1, hours(-11))
        .await;
    // Never scored.
    seed.user("newcomer", 0, 0, None).await;
    let server = Server::for_db(&db).await;

    for (name, streak) in [
        ("latest", 5),
        ("one-behind", 5),
        ("missed", 0),
        ("frozen", 5),
        ("frozen-twice", 5),
        ("frozen-late", 0),
        ("replaced", 0),
        ("newcomer", 0),
    ] {
        let (status, body) = get_self(&server, name).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["streak"], streak, "{name}: {body}");
    }
    server.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn rank_breaks_ties_by_username_in_byte_order() {
    let db = TestDb::new().await;
    let seed = Seed(&db.pool);
    // Byte order of the score-10 names: "B" (0x42) < "a" < "ab" < "b" < "c" < "é" (0xC3 0xA9).
    for (name, score) in [
        ("b", 10),
        ("é", 10),
        ("a", 10),
        ("y", 5),
        ("c", 10),
        ("z", 20),
        ("B", 10),
        ("ab", 10),
        ("zero", 0),
    ] {
        seed.user(name, score, 0, None).await;
    }
    let server = Server::for_db(&db).await;
    let expected = ["z", "B", "a", "ab", "b", "c", "é", "y", "zero"];
    for (i, name) in expected.iter().enumerate() {
        let (status, body) = get_self(&server, name).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["rank"], i + 1, "{name}: {body}");
    }
    let (status, body) = get_json(&server.url("/fetch/lb"), &[]).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, expected);

    // The rank query agrees with counting, for players and for positions between them.
    let mut conn = db.pool.acquire().await.unwrap();
    for (score, name, rank) in [
        (10, "ab", 4),
        (10, "aa", 4),
        (100, "x", 1),
        (0, "", 9),
        (1, "z", 9),
    ] {
        assert_eq!(
            queries::rank(&mut conn, score, name).await.unwrap(),
            rank,
            "{score} {name}"
        );
        assert_eq!(
            queries::rank_by_counting(&mut conn, score, name)
                .await
                .unwrap(),
            rank,
            "{score} {name}"
        );
    }
    drop(conn);

    server.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn leaderboard_is_the_top_ten_best_first_with_ranks() {
    let db = TestDb::new().await;
    let seed = Seed(&db.pool);
    let players: Vec<(String, i64)> = (0..25)
        .map(|i| (format!("p{i:02}"), i64::from(i % 7) * 100 + 7))
        .collect();
    seed.users(&players).await;
    let server = Server::for_db(&db).await;

    let (status, body) = get_json(&server.url("/fetch/lb"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let mut sorted = players.clone();
    sorted.sort_by(|(a, sa), (b, sb)| sb.cmp(sa).then_with(|| a.as_bytes().cmp(b.as_bytes())));
    let expected: Vec<serde_json::Value> = sorted
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, (name, score))| json!({"rank": i + 1, "username": name, "score": score}))
        .collect();
    assert_eq!(body, serde_json::Value::Array(expected));
    // Every entry's rank is the one `self` shows.
    for entry in body.as_array().unwrap() {
        let (_, me) = get_self(&server, entry["username"].as_str().unwrap()).await;
        assert_eq!(me["rank"], entry["rank"], "{entry}");
    }
    server.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn empty_leaderboard_is_an_empty_array() {
    let db = TestDb::new().await;
    let server = Server::for_db(&db).await;
    let (status, body) = get_json(&server.url("/fetch/lb"), &[]).await;
    assert_eq!((status, body), (200, json!([])));
    server.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn unicode_and_sql_metacharacter_usernames_are_just_names() {
    let db = TestDb::new().await;
    let seed = Seed(&db.pool);
    let names = [
        "'; DROP TABLE users; --",
        "Robert'); DELETE FROM users WHERE ('1'='1",
        "Zoë 🎉",
        "名前",
        "100%_sure",
        "back\\slash \"quoted\"",
        "a+b&c=d?e#f/g",
        " leading and trailing ",
        "ü",
    ];
    for (i, name) in names.iter().enumerate() {
        seed.user(name, 1000 - i64::try_from(i).unwrap(), 0, None)
            .await;
    }
    let server = Server::for_db(&db).await;
    for (i, name) in names.iter().enumerate() {
        let (status, body) = get_self(&server, name).await;
        assert_eq!(status, 200, "{name:?}: {body}");
        assert_eq!(body["username"], *name);
        assert_eq!(body["rank"], i + 1, "{name:?}");
    }
    // Exact matches only: no LIKE wildcards, no padding, no case or accent folding.
    for near_miss in [
        "100%",
        "100%_sur",
        " leading and trailing",
        "zoë 🎉",
        "u",
        "Ü",
        "u\u{308}",
    ] {
        let (status, body) = get_self(&server, near_miss).await;
        assert_eq!(
            (status, body),
            (404, json!({"error": "unknown user"})),
            "{near_miss:?}"
        );
    }
    let (status, body) = get_json(&server.url("/fetch/lb"), &[]).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["username"].as_str().unwrap())
        .collect();
    assert_eq!(listed, names);
    // The tables are all still there.
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(users, i64::try_from(names.len()).unwrap());
    server.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn bad_requests_and_unknown_users_get_json_errors() {
    let db = TestDb::new().await;
    Seed(&db.pool).user("known", 1, 0, None).await;
    let server = Server::for_db(&db).await;
    let url = server.url("/fetch/self");
    let too_long = "x".repeat(129);
    for (query, status, error) in [
        (vec![], 400, "missing query parameter: username"),
        (
            vec![("user", "known")],
            400,
            "missing query parameter: username",
        ),
        (vec![("username", "")], 400, "empty username"),
        (
            vec![("username", "known"), ("username", "known")],
            400,
            "query parameter username given more than once",
        ),
        (
            vec![("username", too_long.as_str())],
            400,
            "username longer than 128 characters",
        ),
        (
            vec![("username", "tab\there")],
            400,
            "username contains a control character",
        ),
        (vec![("username", "unknown")], 404, "unknown user"),
    ] {
        let (got_status, body) = get_json(&url, &query).await;
        assert_eq!(got_status, status, "{query:?}: {body}");
        assert_eq!(body, json!({"error": error}), "{query:?}");
    }
    // 128 characters (256 bytes) is a valid name that nobody registered.
    let (status, _) = get_self(&server, &"é".repeat(128)).await;
    assert_eq!(status, 404);
    server.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_json() {
    let db = TestDb::new().await;
    let server = Server::for_db(&db).await;
    for path in ["/", "/fetch", "/fetch/nope", "/fetch/lb/", "/fetch/self/x"] {
        let (status, body) = get_json(&server.url(path), &[]).await;
        assert_eq!(
            (status, body),
            (404, json!({"error": "not found"})),
            "{path}"
        );
    }
    let client = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::POST, "/fetch/lb"),
        (reqwest::Method::DELETE, "/fetch/self?username=x"),
        (reqwest::Method::PUT, "/fetch/self"),
    ] {
        let response = client
            .request(method.clone(), server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405, "{method} {path}");
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        assert!(allow.contains("GET"), "{allow}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body, json!({"error": "method not allowed"}));
    }
    server.stop().await;
    db.drop_db().await;
}

/// A database URL on a local port where nothing listens.
fn closed_port_settings() -> DatabaseSettings {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    DatabaseSettings::from_url(&format!(
        "mysql://bp:sentinel-pw@127.0.0.1:{port}/buttonparty"
    ))
}

async fn assert_unavailable_quickly(server: &Server, limit: Duration) {
    for path in ["/fetch/self?username=alice", "/fetch/lb"] {
        let started = Instant::now();
        let response = reqwest::get(server.url(path)).await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(response.status().as_u16(), 503, "{path}");
        assert_eq!(response.headers()["retry-after"], "1");
        let text = response.text().await.unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            json!({"error": "database unavailable, try again later"})
        );
        for secret in ["sentinel-pw", "127.0.0.1", "mysql", "SELECT"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(elapsed < limit, "{path} took {elapsed:?}");
    }
}

#[tokio::test]
async fn database_refusing_connections_gives_503_quickly() {
    let store = common::store(&closed_port_settings(), 500).await;
    let server = Server::start(store, Clock::Fixed(NOW)).await;
    assert_unavailable_quickly(&server, Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test]
async fn database_that_never_answers_gives_503_within_the_timeout() {
    // Accepts connections and never says a word: the MySQL handshake would wait forever.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let settings = DatabaseSettings::from_url(&format!(
        "mysql://bp:sentinel-pw@127.0.0.1:{port}/buttonparty"
    ));
    let store = common::store(&settings, 500).await;
    let server = Server::start(store, Clock::Fixed(NOW)).await;
    assert_unavailable_quickly(&server, Duration::from_secs(5)).await;
    server.stop().await;
    silent.abort();
}

/// `EXPLAIN` rows as (table, access type, key, extra).
async fn explain(
    query: sqlx::query::Query<'_, sqlx::MySql, sqlx::mysql::MySqlArguments>,
    pool: &sqlx::MySqlPool,
) -> Vec<(String, String, String, String)> {
    query
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let text = |name: &str| -> String {
                row.try_get::<Option<String>, _>(name)
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            };
            (text("table"), text("type"), text("key"), text("Extra"))
        })
        .collect()
}

#[tokio::test]
async fn queries_use_the_indexes() {
    let db = TestDb::new().await;
    let players: Vec<(String, i64)> = (0..3000)
        .map(|i| (format!("player-{i:05}"), (i * 7919) % 100_000))
        .collect();
    Seed(&db.pool).users(&players).await;
    for table in ["ANALYZE TABLE users", "ANALYZE TABLE score_prefix_counts"] {
        sqlx::query(sqlx::AssertSqlSafe(table))
            .execute(&db.pool)
            .await
            .unwrap();
    }

    // The leaderboard walks the first entries of users_by_score: no sort, no table rows.
    let lb = explain(
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN {}",
            queries::LEADERBOARD_SQL
        ))),
        &db.pool,
    )
    .await;
    assert_eq!(lb.len(), 1, "{lb:?}");
    assert_eq!(lb[0].2, "users_by_score", "{lb:?}");
    assert!(!lb[0].3.contains("filesort"), "{lb:?}");

    // The rank: primary-key ranges of the histogram, and an index-only range of the ties.
    let score = 51_234;
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        queries::RANK_SQL
    )));
    for range in fetch_api::model::prefix_ranges_above(score) {
        query = query.bind(range.first).bind(range.last);
    }
    let rank = explain(query.bind(score).bind("player-01500".as_bytes()), &db.pool).await;
    let access: Vec<(&str, &str, &str)> = rank
        .iter()
        .filter(|(table, ..)| !table.is_empty())
        .map(|(table, kind, key, _)| (table.as_str(), kind.as_str(), key.as_str()))
        .collect();
    assert!(
        access.contains(&("score_prefix_counts", "range", "PRIMARY")),
        "{rank:?}"
    );
    assert!(
        access.contains(&("users", "range", "users_by_score")),
        "{rank:?}"
    );
    assert!(
        rank.iter()
            .filter(|(table, ..)| table == "users")
            .all(|(.., extra)| extra.contains("Using index")),
        "{rank:?}"
    );
    db.drop_db().await;
}

/// The histogram as it should be, recomputed from `users`: (shift, prefix, players).
async fn histogram_from_users(pool: &sqlx::MySqlPool) -> Vec<(i64, i64, i64)> {
    sqlx::query_as(
        "SELECT CAST(s.shift_bits AS SIGNED), CAST(u.score >> s.shift_bits AS SIGNED) AS prefix, COUNT(*) \
         FROM users u JOIN (SELECT 0 AS shift_bits UNION ALL SELECT 8 UNION ALL SELECT 16 \
           UNION ALL SELECT 24 UNION ALL SELECT 32 UNION ALL SELECT 40 UNION ALL SELECT 48 \
           UNION ALL SELECT 56) s \
         WHERE u.score >> s.shift_bits > 0 GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn histogram_stored(pool: &sqlx::MySqlPool) -> Vec<(i64, i64, i64)> {
    sqlx::query_as(
        "SELECT CAST(shift_bits AS SIGNED), prefix, players FROM score_prefix_counts \
         WHERE players <> 0 ORDER BY shift_bits, prefix",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn histogram_triggers_keep_ranks_exact_under_every_kind_of_write() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let mut state = 0x5eed_u64;
    let mut next = move |n: u64| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    };
    let name = |i: u64| format!("p{i:03}");
    // Scores across every byte boundary: many ties near 0, some huge.
    let magnitudes: [i64; 7] = [
        3,
        300,
        70_000,
        20_000_000,
        5_000_000_000,
        1 << 50,
        (1 << 62) + 255,
    ];

    // Registrations (score 0), and players inserted with a score.
    let mut players: Vec<(String, i64)> = (0..150).map(|i| (name(i), 0)).collect();
    for (i, player) in players.iter_mut().enumerate().skip(100) {
        player.1 = i64::try_from(next(300)).unwrap() + i64::try_from(i).unwrap();
    }
    Seed(pool).users(&players).await;

    for round in 0..12 {
        // The writer's batch upsert: some scores up, some unchanged.
        let mut batch = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO users (username, score, streak, last_scored_opens_at_ms, created_at_ms) ",
        );
        let picked: Vec<u64> = (0..40)
            .map(|_| next(150))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        batch.push_values(&picked, |mut row, &i| {
            let bump = if next(4) == 0 {
                0
            } else {
                i64::try_from(next(600)).unwrap()
            };
            row.push_bind(name(i).into_bytes())
                .push_bind(bump)
                .push_bind(1u32)
                .push_bind(None::<i64>)
                .push_bind(0i64);
        });
        batch.push(
            " ON DUPLICATE KEY UPDATE score = score + VALUES(score), streak = VALUES(streak)",
        );
        batch.build().execute(pool).await.unwrap();
        // Purchases: a single-row UPDATE lowering a score, never below 0.
        for _ in 0..10 {
            sqlx::query("UPDATE users SET score = GREATEST(score - 60, 0) WHERE username = ?")
                .bind(name(next(150)).into_bytes())
                .execute(pool)
                .await
                .unwrap();
        }
        // Jumps across several bytes at once, both ways.
        let jumper = name(next(150));
        let to = magnitudes[usize::try_from(next(7)).unwrap()];
        sqlx::query("UPDATE users SET score = ? WHERE username = ?")
            .bind(to)
            .bind(jumper.as_bytes())
            .execute(pool)
            .await
            .unwrap();
        // A rolled-back transaction leaves no trace.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("UPDATE users SET score = score DIV 2 + 1")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        // An occasional deletion.
        if round % 4 == 3 {
            sqlx::query("DELETE FROM users WHERE username = ?")
                .bind(name(next(150)).into_bytes())
                .execute(pool)
                .await
                .unwrap();
        }

        assert_eq!(
            histogram_stored(pool).await,
            histogram_from_users(pool).await,
            "round {round}"
        );
        let odd: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM score_prefix_counts WHERE players < 0 OR prefix <= 0",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(odd, 0, "round {round}: negative counts or prefix-0 rows");
    }

    // Every player's rank (and positions between players) agrees with counting.
    let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as("SELECT username, score FROM users")
        .fetch_all(pool)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    for (username, score) in rows {
        let username = String::from_utf8(username).unwrap();
        for (s, u) in [
            (score, username.as_str()),
            (score + 1, ""),
            ((score - 1).max(0), "~"),
        ] {
            assert_eq!(
                queries::rank(&mut conn, s, u).await.unwrap(),
                queries::rank_by_counting(&mut conn, s, u).await.unwrap(),
                "{s} {u:?}"
            );
        }
    }
    drop(conn);
    db.drop_db().await;
}

#[tokio::test]
async fn binary_serves_over_http_and_stops_on_sigterm() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let db = TestDb::new().await;
    Seed(&db.pool).user("alice", 3, 0, None).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fetch-api"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("BUTTONPARTY_DB_SECRET_ID")
        .env("BUTTONPARTY_DATABASE_URL", &db.url)
        .env("BUTTONPARTY_LOG", "info")
        .env("BUTTONPARTY_LOG_FORMAT", "json")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start fetch-api");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if event["message"] == "fetch API listening" {
                return event["listen"].as_str().unwrap().to_owned();
            }
        }
        panic!("fetch-api exited before listening");
    })
    .await
    .expect("fetch-api did not start listening");

    let (status, body) = get_json(&format!("http://{addr}/fetch/lb"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([{"rank": 1, "username": "alice", "score": 3}]));
    let (status, body) = get_json(
        &format!("http://{addr}/fetch/self"),
        &[("username", "alice")],
    )
    .await;
    assert_eq!((status, &body["rank"]), (200, &json!(1)), "{body}");

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("fetch-api did not stop within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    db.drop_db().await;
}
