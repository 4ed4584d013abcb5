//! Shared helpers of the integration tests: seeding a [`TestDb`] with SQL and running the API
//! in-process on a local port.

#![allow(dead_code)]

use std::net::SocketAddr;

use buttonparty::rules::{HOUR_MS, Millis, Powerup, PowerupKind, Tier};
use buttonparty::settings::DatabaseSettings;
use buttonparty::testing::TestDb;
use fetch_api::config::FetchSettings;
use fetch_api::{AppState, Clock, Store, router, server};
use sqlx::MySqlPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A fixed "now" for deterministic tests: 2027-01-15T08:00:00Z.
pub const NOW: Millis = 1_800_000_000_000;

/// A round's press window in the tests.
pub const WINDOW_MS: Millis = 60_000;

/// `NOW` shifted by whole hours.
pub fn hours(h: i64) -> Millis {
    NOW + h * HOUR_MS
}

/// Inserts rows the way the incoming handler stores them.
#[derive(Debug, Clone, Copy)]
pub struct Seed<'a>(pub &'a MySqlPool);

impl Seed<'_> {
    /// A registered player.
    pub async fn user(&self, name: &str, score: i64, streak: u32, last_scored: Option<Millis>) {
        sqlx::query(
            "INSERT INTO users (username, score, streak, last_scored_opens_at_ms, created_at_ms) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(name.as_bytes())
        .bind(score)
        .bind(streak)
        .bind(last_scored)
        .bind(NOW - 1000 * HOUR_MS)
        .execute(self.0)
        .await
        .expect("insert user");
    }

    /// A round `id` opening at `opens_at` with the test window.
    pub async fn round(&self, id: &str, opens_at: Millis) {
        sqlx::query(
            "INSERT INTO rounds (round_id, opens_at_ms, closes_at_ms, recorded_at_ms) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(id.as_bytes())
        .bind(opens_at)
        .bind(opens_at + WINDOW_MS)
        .bind(opens_at)
        .execute(self.0)
        .await
        .expect("insert round");
    }

    /// A scored press: `name` scored in the round opening at `opens_at` (its id is for the
    /// reader's convenience; events refer to rounds by opening time).
    pub async fn scored(&self, name: &str, _round_id: &str, opens_at: Millis, streak: u32) {
        sqlx::query(
            "INSERT INTO player_events (username, sent_at_ms, message_id, kind, outcome, \
             round_opens_at_ms, streak, points, received_at_ms) \
             VALUES (?, ?, ?, 'PRESS', 'scored', ?, ?, ?, ?)",
        )
        .bind(name.as_bytes())
        .bind(opens_at + 1_000)
        .bind(format!("msg-{name}-{opens_at}").as_bytes())
        .bind(opens_at)
        .bind(streak)
        .bind(i64::from(streak))
        .bind(opens_at + 1_000)
        .execute(self.0)
        .await
        .expect("insert score");
    }

    /// A powerup grant of `kind` at `tier`, bought at `starts_at`.
    pub async fn powerup(&self, name: &str, kind: PowerupKind, tier: u8, starts_at: Millis) {
        self.powerup_message(
            name,
            kind,
            tier,
            starts_at,
            &format!("msg-{kind}-{starts_at}"),
        )
        .await
    }

    /// [`Seed::powerup`] bought by the message `message_id`.
    pub async fn powerup_message(
        &self,
        name: &str,
        kind: PowerupKind,
        tier: u8,
        starts_at: Millis,
        message_id: &str,
    ) {
        let powerup = Powerup::new(kind, Tier::new(tier).expect("tier 1-4"));
        sqlx::query(
            "INSERT INTO player_events (username, sent_at_ms, message_id, kind, powerup_kind, \
             tier, request_key, outcome, points, expires_at_ms, received_at_ms) \
             VALUES (?, ?, ?, 'PURCHASE', ?, ?, ?, 'bought', ?, ?, ?)",
        )
        .bind(name.as_bytes())
        .bind(starts_at)
        .bind(message_id.as_bytes())
        .bind(kind.as_str())
        .bind(tier)
        .bind(buttonparty::fold::request_key(None, message_id).as_slice())
        .bind(powerup.price())
        .bind(starts_at + powerup.duration())
        .bind(starts_at)
        .execute(self.0)
        .await
        .expect("insert powerup");
    }

    /// Many players with one multi-row insert: `(name, score)`.
    pub async fn users(&self, players: &[(String, i64)]) {
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO users (username, score, streak, last_scored_opens_at_ms, created_at_ms) ",
        );
        q.push_values(players, |mut row, (name, score)| {
            row.push_bind(name.as_bytes())
                .push_bind(*score)
                .push_bind(0u32)
                .push_bind(None::<Millis>)
                .push_bind(NOW);
        });
        q.build().execute(self.0).await.expect("insert users");
    }
}

/// A store on `settings` with a database timeout of `timeout_ms`.
pub async fn store(settings: &DatabaseSettings, timeout_ms: u64) -> Store {
    let fetch = FetchSettings {
        db_timeout_ms: timeout_ms,
        ..FetchSettings::default()
    };
    Store::from_url_settings(settings, &fetch)
        .await
        .expect("store")
}

/// The API served over HTTP on a local port.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Serves the router on `127.0.0.1:<free port>` with `store` and `clock`.
    pub async fn start(store: Store, clock: Clock) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let app = router(AppState {
            store,
            clock,
            identity_claim: None,
        });
        let task = tokio::spawn(server::serve(listener, app, shutdown.clone()));
        Self {
            addr,
            shutdown,
            task,
        }
    }

    /// Serves `db` at the fixed time [`NOW`].
    pub async fn for_db(db: &TestDb) -> Self {
        Self::start(store(&db.settings(), 5_000).await, Clock::Fixed(NOW)).await
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server gracefully.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("server task")
            .expect("server stopped cleanly");
    }
}

/// `GET url` with optional query pairs: (status, JSON body).
pub async fn get_json(url: &str, query: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(url)
        .query(query)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    assert_eq!(content_type, "application/json", "status {status}: {text}");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

/// `GET /fetch/self?username=name`.
pub async fn get_self(server: &Server, name: &str) -> (u16, serde_json::Value) {
    get_json(&server.url("/fetch/self"), &[("username", name)]).await
}
