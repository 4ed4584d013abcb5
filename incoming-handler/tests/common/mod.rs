//! Test harness: per-test queues, topic, platform application and database on the real dev stack
//! (LocalStack + MariaDB), a handler in-process or as a process, and a TCP proxy that can cut the
//! database connection.

#![allow(dead_code)]

pub mod history;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use buttonparty::db::Database;
use buttonparty::testing::{TestDb, TestQueue, aws_config, topic_and_platform_app, unique};
use incoming_handler::config::Config;
use incoming_handler::stats::Stats;
use incoming_handler::{Clients, run_with_stats};
use sqlx::Row;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Everything one test needs.
pub struct Stack {
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub db: TestDb,
    pub add_user: TestQueue,
    pub press: TestQueue,
    pub powerup: TestQueue,
    pub timestamp: TestQueue,
    pub topic_arn: String,
    pub app_arn: String,
}

/// Queue settings of a test stack.
#[derive(Clone, Copy)]
pub struct QueueOptions {
    pub visibility_secs: u32,
    pub max_receive_count: u32,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            visibility_secs: 30,
            max_receive_count: 5,
        }
    }
}

impl Stack {
    pub async fn new() -> Self {
        Self::with(QueueOptions::default()).await
    }

    pub async fn with(opts: QueueOptions) -> Self {
        let aws = aws_config().await;
        let sqs = aws_sdk_sqs::Client::new(&aws);
        let sns = aws_sdk_sns::Client::new(&aws);
        let base = unique("ih");
        let q = |name: &str| {
            let sqs = sqs.clone();
            let name = format!("{base}-{name}");
            async move {
                TestQueue::new(&sqs, &name, opts.visibility_secs, opts.max_receive_count).await
            }
        };
        let (add_user, press, powerup, timestamp) =
            tokio::join!(q("add"), q("press"), q("powerup"), q("ts"));
        let (topic_arn, app_arn) = topic_and_platform_app(&sns, &base).await;
        Self {
            sqs,
            sns,
            db: TestDb::new().await,
            add_user,
            press,
            powerup,
            timestamp,
            topic_arn,
            app_arn,
        }
    }

    pub fn config(&self) -> Config {
        Config {
            add_user_queue_url: self.add_user.url.clone(),
            press_queue_url: self.press.url.clone(),
            powerup_queue_url: self.powerup.url.clone(),
            timestamp_queue_url: self.timestamp.url.clone(),
            topic_arn: self.topic_arn.clone(),
            platform_application_arn: self.app_arn.clone(),
            press_receivers: 4,
            batch_size: 500,
            batch_linger: Duration::from_millis(20),
            max_in_flight: 2000,
            poll_wait: Duration::from_secs(2),
            add_user_receivers: 2,
            push_concurrency: 10,
            pending_horizon: Duration::from_secs(15 * 86_400),
            metrics: buttonparty::emf::MetricsMode::Off,
            drain: Duration::from_secs(10),
            stats_interval: Duration::from_secs(60),
            identity_attribute: None,
        }
    }

    /// Starts a handler in this process on a database URL (the test database, or a proxy to it).
    pub async fn spawn_handler_with(&self, config: Config, db_url: &str) -> Handler {
        let db = Database::new(
            &buttonparty::settings::DatabaseSettings::from_url(db_url),
            None,
        )
        .await
        .expect("database settings");
        self.spawn_handler_on(config, db).await
    }

    /// Starts a handler in this process on a given database.
    pub async fn spawn_handler_on(&self, config: Config, db: Database) -> Handler {
        let clients = Clients {
            sqs: self.sqs.clone(),
            sns: self.sns.clone(),
            db,
        };
        let shutdown = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(run_with_stats(
            config,
            clients,
            shutdown.clone(),
            stats.clone(),
        ));
        Handler {
            shutdown,
            task,
            stats,
        }
    }

    pub async fn spawn_handler(&self) -> Handler {
        self.spawn_handler_with(self.config(), &self.db.url).await
    }

    /// The environment for the handler binary.
    pub fn env(&self, config: &Config, db_url: &str) -> HashMap<String, String> {
        let mut env = HashMap::new();
        for (k, v) in [
            (
                "BUTTONPARTY_ADD_USER_QUEUE_URL",
                config.add_user_queue_url.clone(),
            ),
            (
                "BUTTONPARTY_PRESS_QUEUE_URL",
                config.press_queue_url.clone(),
            ),
            (
                "BUTTONPARTY_POWERUP_QUEUE_URL",
                config.powerup_queue_url.clone(),
            ),
            (
                "BUTTONPARTY_TIMESTAMP_QUEUE_URL",
                config.timestamp_queue_url.clone(),
            ),
            ("BUTTONPARTY_TOPIC_ARN", config.topic_arn.clone()),
            (
                "BUTTONPARTY_PLATFORM_APPLICATION_ARN",
                config.platform_application_arn.clone(),
            ),
            ("BUTTONPARTY_DATABASE_URL", db_url.to_owned()),
            ("BUTTONPARTY_CATCHUP_POLL_SECS", "1".into()),
            ("BUTTONPARTY_LOG", "info".into()),
            ("BUTTONPARTY_LOG_FORMAT", "text".into()),
        ] {
            env.insert(k.to_owned(), v);
        }
        env
    }

    /// Starts the handler binary.
    pub fn spawn_process(&self, extra: &[(&str, &str)]) -> tokio::process::Child {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_incoming-handler"));
        cmd.arg("run")
            .env_remove("BUTTONPARTY_DB_SECRET_ID")
            .envs(self.env(&self.config(), &self.db.url))
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.spawn().expect("start incoming-handler")
    }

    /// Sends bodies with `SendMessageBatch`: up to 100 in order, more with eight senders at once.
    pub async fn send_all(&self, queue: &TestQueue, bodies: &[String]) {
        let per_sender = bodies.len().div_ceil(8).max(100);
        let mut senders = tokio::task::JoinSet::new();
        for part in bodies.chunks(per_sender) {
            let (sqs, url, part) = (self.sqs.clone(), queue.url.clone(), part.to_vec());
            senders.spawn(async move {
                for chunk in part.chunks(10) {
                    let entries = chunk
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                                .id(i.to_string())
                                .message_body(b)
                                .build()
                                .unwrap()
                        })
                        .collect();
                    let out = sqs
                        .send_message_batch()
                        .queue_url(&url)
                        .set_entries(Some(entries))
                        .send()
                        .await
                        .expect("send batch");
                    assert!(out.failed.is_empty(), "send failures: {:?}", out.failed);
                }
            });
        }
        while let Some(r) = senders.join_next().await {
            r.expect("sender task");
        }
    }

    /// Waits until `n` rounds are recorded.
    pub async fn wait_rounds(&self, n: i64) {
        wait_for("rounds recorded", Duration::from_secs(30), || async {
            self.count("SELECT COUNT(*) FROM rounds").await == n
        })
        .await;
    }

    /// Registers players directly in the database (score 0).
    pub async fn seed_users(&self, names: &[String]) {
        for chunk in names.chunks(1000) {
            let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
                "INSERT INTO users (username, score, streak, created_at_ms) ",
            );
            q.push_values(chunk, |mut b, n| {
                b.push_bind(n.as_bytes())
                    .push_bind(0_i64)
                    .push_bind(0_u32)
                    .push_bind(0_i64);
            });
            q.build().execute(&self.db.pool).await.unwrap();
        }
    }

    /// Gives registered players (made with [`Stack::seed_users`]) `score` points earned before,
    /// as the fold sees it: one old scored event carrying that state, so that a re-fold from a
    /// later instant starts from it.
    pub async fn seed_score(&self, name: &str, score: i64) {
        sqlx::query("UPDATE users SET score = ?, folded_to_ms = 1, folded_to_msg = 'seed' WHERE username = ?")
            .bind(score)
            .bind(name.as_bytes())
            .execute(&self.db.pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO player_events (username, sent_at_ms, message_id, kind, outcome, points, \
             score_after, received_at_ms) VALUES (?, 1, 'seed', 'PRESS', 'scored', ?, ?, 0)",
        )
        .bind(name.as_bytes())
        .bind(score)
        .bind(score)
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    /// Receives every message visible in `queue` and leaves them invisible for `secs`, as a
    /// consumer that crashed after receiving them would. Returns (message id, SentTimestamp,
    /// body) of each.
    pub async fn hold(&self, queue: &TestQueue, secs: i32) -> Vec<(String, i64, String)> {
        self.receive_all(queue, secs)
            .await
            .into_iter()
            .map(|(id, sent, body, _)| (id, sent, body))
            .collect()
    }

    /// Receives every message visible in `queue`, leaving each invisible for `secs`: (message
    /// id, SentTimestamp, body, receipt handle).
    pub async fn receive_all(
        &self,
        queue: &TestQueue,
        secs: i32,
    ) -> Vec<(String, i64, String, String)> {
        use aws_sdk_sqs::types::MessageSystemAttributeName as A;
        let mut out = Vec::new();
        loop {
            let msgs = self
                .sqs
                .receive_message()
                .queue_url(&queue.url)
                .max_number_of_messages(10)
                .visibility_timeout(secs)
                .wait_time_seconds(1)
                .message_system_attribute_names(A::SentTimestamp)
                .send()
                .await
                .unwrap()
                .messages
                .unwrap_or_default();
            if msgs.is_empty() {
                return out;
            }
            for m in msgs {
                let sent = m
                    .attributes()
                    .and_then(|a| a.get(&A::SentTimestamp))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_default();
                out.push((
                    m.message_id.unwrap_or_default(),
                    sent,
                    m.body.unwrap_or_default(),
                    m.receipt_handle.unwrap_or_default(),
                ));
            }
        }
    }

    /// Sends one body and returns its message id.
    pub async fn send_one(&self, queue: &TestQueue, body: &str) -> String {
        self.sqs
            .send_message()
            .queue_url(&queue.url)
            .message_body(body)
            .send()
            .await
            .expect("send")
            .message_id
            .expect("message id")
    }

    /// Announces a round that opened `ago` ago and lasts `window`.
    pub async fn open_round(&self, id: &str, ago: Duration, window: Duration) -> (i64, i64) {
        let opens = now_ms() - ago.as_millis() as i64;
        let closes = opens + window.as_millis() as i64;
        self.timestamp
            .send(
                &self.sqs,
                &format!(r#"{{"round_id":"{id}","opens_at_ms":{opens},"closes_at_ms":{closes}}}"#),
            )
            .await;
        (opens, closes)
    }

    pub async fn score(&self, user: &str) -> Option<i64> {
        sqlx::query("SELECT score FROM users WHERE username = ?")
            .bind(user.as_bytes())
            .fetch_optional(&self.db.pool)
            .await
            .unwrap()
            .map(|r| r.get(0))
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query(sql)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
            .get(0)
    }

    pub async fn depth(&self, url: &str) -> u64 {
        TestQueue::depth(&self.sqs, url).await
    }

    /// Receives (and deletes) what is in a dead-letter queue.
    pub async fn drain_dlq(&self, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
        let mut all = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap();
            let msgs = out.messages.unwrap_or_default();
            if msgs.is_empty() {
                return all;
            }
            for m in &msgs {
                self.sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle.clone().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
            all.extend(msgs);
        }
    }

    /// Creates the four queues again under the same names (after an emulator restart).
    pub async fn recreate_queues(&self) {
        for q in [&self.add_user, &self.press, &self.powerup, &self.timestamp] {
            let name = q.url.rsplit('/').next().unwrap();
            let again = TestQueue::new(&self.sqs, name, 30, 5).await;
            assert_eq!(again.url, q.url, "same URL after the restart");
        }
    }

    /// Creates a database user (no SUPER privilege) with all rights on the test database;
    /// returns (user, password).
    pub async fn app_user(&self) -> (String, String) {
        use sqlx::{AssertSqlSafe, Connection};
        let user = format!("app{:08x}", rand::random::<u32>());
        let password = format!("sentinel-pw-{:016x}", rand::random::<u64>());
        let admin_url = buttonparty::testing::env("BUTTONPARTY_TEST_DATABASE_URL");
        let mut admin = sqlx::MySqlConnection::connect(admin_url.trim_end_matches('/'))
            .await
            .unwrap();
        for host in ["%", "localhost"] {
            for sql in [
                format!("CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'"),
                format!("GRANT ALL ON `{}`.* TO '{user}'@'{host}'", self.db.name),
            ] {
                sqlx::query(AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await
                    .unwrap();
            }
        }
        (user, password)
    }

    /// URL of the test database for `user`/`password`.
    pub fn url_for(&self, user: &str, password: &str) -> String {
        format!("mysql://{user}:{password}@127.0.0.1:3306/{}", self.db.name)
    }

    pub async fn cleanup(self) {
        for q in [&self.add_user, &self.press, &self.powerup, &self.timestamp] {
            q.delete(&self.sqs).await;
        }
        self.db.drop_db().await;
    }
}

/// A handler running in this process.
pub struct Handler {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), incoming_handler::RunError>>,
    pub stats: Arc<Stats>,
}

impl Handler {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("handler stops within 30 s")
            .expect("handler task")
            .expect("handler ran without error");
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Polls `cond` every 200 ms until it holds or `timeout` passes.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if !try_wait_for(timeout, cond).await {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Polls `cond` every 200 ms until it holds (true) or `timeout` passes (false).
pub async fn try_wait_for<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends the log of handlers running in this process to the test's output, which the harness
/// shows when the test fails. Filter: `BUTTONPARTY_TEST_LOG`, by default warnings and errors
/// plus the handler's info lines (a few per minute).
pub fn log_to_test_output() {
    let filter = std::env::var("BUTTONPARTY_TEST_LOG")
        .unwrap_or_else(|_| "warn,incoming_handler=info,sqlx=error".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// The last `max` bytes of `text` (at a character boundary).
pub fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// One cell of a diagnosis row as text, whatever its SQL type.
fn cell(row: &sqlx::mysql::MySqlRow, i: usize) -> String {
    let show = |v: Option<String>| v.unwrap_or_else(|| "NULL".into());
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return show(v.map(|v| v.to_string()));
    }
    if let Ok(v) = row.try_get::<Option<u64>, _>(i) {
        return show(v.map(|v| v.to_string()));
    }
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return show(v);
    }
    if let Ok(v) = row.try_get::<Option<Vec<u8>>, _>(i) {
        return show(v.map(|b| String::from_utf8_lossy(&b).into_owned()));
    }
    "?".into()
}

impl Stack {
    /// Like [`wait_for`], but a timeout panics with [`Stack::diagnosis`] and `notes()` (what the
    /// scenario knows at that moment, e.g. a child process's log), so that a failure explains
    /// itself.
    pub async fn wait_or_explain<F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        handler: Option<&Handler>,
        notes: &dyn Fn() -> String,
        cond: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        if try_wait_for(timeout, cond).await {
            return;
        }
        let diagnosis = self.diagnosis(handler).await;
        let notes = notes();
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!("\n{notes}")
        };
        panic!("timed out after {timeout:?} waiting for {what}\n{diagnosis}{notes}");
    }

    /// The state of the database, the press queue and (if given) an in-process handler, for a
    /// failed wait: tells a press never stored (lost, dead-lettered, still invisible) from one
    /// stored without scoring (its verdict, a re-fold not done) from a stalled handler (held
    /// locks, a stuck statement, counters not moving). Never panics; gives up after 30 s.
    pub async fn diagnosis(&self, handler: Option<&Handler>) -> String {
        let mut out = match tokio::time::timeout(Duration::from_secs(30), self.state_report()).await
        {
            Ok(text) => text,
            Err(_) => "(database/queue diagnosis timed out after 30 s)\n".into(),
        };
        if let Some(h) = handler {
            out.push_str(&format!(
                "in-process handler: task finished = {}; totals = {:?}\n",
                h.task.is_finished(),
                h.stats.totals()
            ));
        }
        out
    }

    async fn state_report(&self) -> String {
        let pool = &self.db.pool;
        let rows = |sql: &'static str| async move {
            match sqlx::query(sql).fetch_all(pool).await {
                Ok(rows) => rows
                    .iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| cell(r, i))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect::<Vec<_>>(),
                Err(e) => vec![format!("(query failed: {e})")],
            }
        };
        let one = |sql: &'static str| async move { rows(sql).await.join("; ") };
        let mut out = format!("--- diagnosis: database {} ---\n", self.db.name);
        out.push_str(&format!(
            "scores: {}; users: {}\n",
            one("SELECT COUNT(*) FROM scores").await,
            one("SELECT COUNT(*) FROM users").await
        ));
        out.push_str(&format!(
            "player_events by outcome (NULL = stored, not judged): {}\n",
            rows("SELECT COALESCE(outcome, 'NULL'), COUNT(*) FROM player_events GROUP BY outcome ORDER BY outcome")
                .await
                .join(", ")
        ));
        out.push_str(&format!(
            "events with outcome NULL: {}; users with refold_from_ms set: {}\n",
            one("SELECT COUNT(*) FROM player_events WHERE outcome IS NULL").await,
            one("SELECT COUNT(*) FROM users WHERE refold_from_ms IS NOT NULL").await
        ));
        out.push_str(&format!(
            "users without a scored press: {} (without any stored event: {})\n",
            one("SELECT COUNT(*) FROM users u WHERE NOT EXISTS \
                 (SELECT 1 FROM player_events e WHERE e.username = u.username AND e.outcome = 'scored')")
            .await,
            one("SELECT COUNT(*) FROM users u WHERE NOT EXISTS \
                 (SELECT 1 FROM player_events e WHERE e.username = u.username)")
            .await
        ));
        out.push_str("  some of them (username folded_to_ms refold_from_ms | sent_at_ms message_id outcome round_opens_at_ms received_at_ms):\n");
        for r in rows(
            "SELECT u.username, u.folded_to_ms, u.refold_from_ms, '|', e.sent_at_ms, e.message_id, \
             e.outcome, e.round_opens_at_ms, e.received_at_ms \
             FROM users u LEFT JOIN player_events e ON e.username = u.username \
             WHERE NOT EXISTS (SELECT 1 FROM player_events s \
                               WHERE s.username = u.username AND s.outcome = 'scored') \
             ORDER BY u.username LIMIT 8",
        )
        .await
        {
            out.push_str(&format!("    {r}\n"));
        }
        out.push_str(&format!(
            "rounds (round_id opens_at_ms closes_at_ms recorded_at_ms): {}\n",
            rows("SELECT round_id, opens_at_ms, closes_at_ms, recorded_at_ms FROM rounds ORDER BY opens_at_ms")
                .await
                .join("; ")
        ));
        out.push_str(&format!(
            "events received_at_ms min max: {}\n",
            one("SELECT MIN(received_at_ms), MAX(received_at_ms) FROM player_events").await
        ));
        out.push_str(&format!(
            "open transactions (thread state age_s rows_locked query): {}\n",
            rows(
                "SELECT CAST(trx_mysql_thread_id AS SIGNED), trx_state, \
                  TIMESTAMPDIFF(SECOND, trx_started, NOW()), CAST(trx_rows_locked AS SIGNED), \
                  LEFT(COALESCE(trx_query, ''), 160) \
                  FROM information_schema.INNODB_TRX ORDER BY trx_started LIMIT 10"
            )
            .await
            .join("; ")
        ));
        out.push_str(&format!(
            "busy sessions on this database (id command time_s state info): {}\n",
            rows(
                "SELECT CAST(id AS SIGNED), command, CAST(time AS SIGNED), COALESCE(state, ''), \
                  LEFT(COALESCE(info, ''), 160) FROM information_schema.PROCESSLIST \
                  WHERE db = DATABASE() AND command <> 'Sleep' AND id <> CONNECTION_ID()"
            )
            .await
            .join("; ")
        ));
        for (name, url) in [
            ("press queue", &self.press.url),
            ("press DLQ", &self.press.dlq_url),
            ("timestamp queue", &self.timestamp.url),
        ] {
            out.push_str(&format!("{name}: {}\n", self.queue_counts(url).await));
        }
        out
    }

    /// A queue's approximate counts (visible, in flight, delayed), or why they are unknown.
    pub async fn queue_counts(&self, url: &str) -> String {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        match self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::All)
            .send()
            .await
        {
            Ok(out) => {
                let attrs = out.attributes.unwrap_or_default();
                let get = |k: A| attrs.get(&k).cloned().unwrap_or_else(|| "?".into());
                format!(
                    "ApproximateNumberOfMessages={} ApproximateNumberOfMessagesNotVisible={} \
                     ApproximateNumberOfMessagesDelayed={}",
                    get(A::ApproximateNumberOfMessages),
                    get(A::ApproximateNumberOfMessagesNotVisible),
                    get(A::ApproximateNumberOfMessagesDelayed)
                )
            }
            Err(e) => format!("(GetQueueAttributes failed: {e})"),
        }
    }
}

pub fn press(user: &str) -> String {
    serde_json::json!({ "username": user }).to_string()
}

/// A TCP proxy to MariaDB that can cut every connection and refuse new ones.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let cut = cut.clone();
            let conns = conns.clone();
            async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let h = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    conns.lock().await.push(h);
                }
            }
        });
        Self {
            addr,
            cut,
            conns,
            accept,
        }
    }

    /// Drops every open connection and refuses new ones.
    pub async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for h in self.conns.lock().await.drain(..) {
            h.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// The test database's URL through this proxy.
    pub fn url(&self, db: &TestDb) -> String {
        // mysql://user[:pw]@host:port/name -> same with the proxy's address.
        let at = db.url.rfind('@').expect("user in the test database URL");
        let slash = db.url[at..].find('/').expect("database name") + at;
        format!("{}{}{}", &db.url[..=at], self.addr, &db.url[slash..])
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
