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
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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
