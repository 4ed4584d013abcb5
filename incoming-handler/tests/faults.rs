//! The fault suite (SPEC §9): each scenario injects one fault against the real LocalStack and
//! MariaDB during a burst of presses and reports a figure line with "lost" (sent − applied −
//! dead-lettered as malformed) and "double" (applied more than once) counts.
//!
//! Several scenarios change global server state (kill MariaDB, `read_only`, lock timeouts, stop
//! the emulator), so this suite runs on its own, one test at a time, in name order:
//! `scripts/faults` (which `scripts/test` calls after the main suite). Each figure is appended as a
//! JSON line to `$BUTTONPARTY_FAULT_REPORT` (default: `target/tmp/fault-report.jsonl`) and printed.

mod common;

use std::io::Write as _;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use buttonparty::db::Database;
use buttonparty::settings::DatabaseSettings;
use common::*;
use sqlx::{Connection, Row};
use tokio::io::AsyncReadExt;

/// One scenario's result.
struct Figure<'a> {
    scenario: &'a str,
    sent: u64,
    applied: u64,
    dead_lettered: u64,
    lost: i64,
    double: i64,
    figure: String,
}

fn report(f: Figure<'_>) {
    let line = serde_json::json!({
        "scenario": f.scenario, "sent": f.sent, "applied": f.applied,
        "dead_lettered": f.dead_lettered, "lost": f.lost, "double": f.double, "figure": f.figure,
    })
    .to_string();
    println!("FAULT {line}");
    let path = std::env::var("BUTTONPARTY_FAULT_REPORT")
        .unwrap_or_else(|_| format!("{}/fault-report.jsonl", env!("CARGO_TARGET_TMPDIR")));
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
    assert_eq!(f.lost, 0, "{}: lost", f.scenario);
    assert_eq!(f.double, 0, "{}: double", f.scenario);
}

/// Reads a pipe to its end in the background.
fn read_all<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    mut r: R,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Reads a pipe in the background into a buffer that can be looked at any time: the child never
/// blocks on a full pipe (64 KiB), and a failure can show what it logged so far.
/// Returns the buffer and the reader (which ends at the pipe's end).
fn tap<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    mut r: R,
) -> (Arc<Mutex<Vec<u8>>>, tokio::task::JoinHandle<()>) {
    let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
    let reader = tokio::spawn({
        let buf = buf.clone();
        async move {
            let mut chunk = vec![0u8; 16 * 1024];
            while let Ok(n) = r.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        }
    });
    (buf, reader)
}

/// The last `max` bytes of what [`tap`] read so far.
fn tapped(buf: &Mutex<Vec<u8>>, max: usize) -> String {
    let text = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    tail(&text, max).to_owned()
}

/// Runs an SQL statement as root with the `mariadb` client (usable from `Drop`).
fn root_sql(sql: &str) {
    let status = std::process::Command::new("mariadb")
        .args(["-uroot", "-h127.0.0.1", "-P3306", "-e", sql])
        .status()
        .expect("mariadb client");
    assert!(status.success(), "{sql}");
}

/// Restores a global setting when dropped, even if the test fails.
struct RestoreGlobal(&'static str);
impl Drop for RestoreGlobal {
    fn drop(&mut self) {
        root_sql(self.0);
    }
}

/// A burst: `users` players, each pressing once, plus a duplicate for every `dup_every`-th.
struct Burst {
    users: Vec<String>,
    sent: u64,
}

async fn burst(s: &Stack, prefix: &str, n: usize, dup_every: usize) -> Burst {
    let users: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    s.seed_users(&users).await;
    let mut bodies: Vec<String> = users.iter().map(|u| press(u)).collect();
    if dup_every > 0 {
        bodies.extend(users.iter().step_by(dup_every).map(|u| press(u)));
    }
    s.send_all(&s.press, &bodies).await;
    Burst {
        sent: bodies.len() as u64,
        users,
    }
}

/// (applied, lost, double) for a burst in which every player should score exactly once.
async fn outcome(s: &Stack, b: &Burst) -> (u64, i64, i64) {
    let applied = s.count("SELECT COUNT(*) FROM scores").await;
    let sum: i64 = sqlx::query("SELECT CAST(COALESCE(SUM(score), 0) AS SIGNED) FROM users")
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
        .get(0);
    let expected = b.users.len() as i64;
    (applied as u64, expected - applied, sum - applied)
}

async fn all_scored(s: &Stack, b: &Burst, timeout: Duration) {
    all_scored_or_explain(s, b, timeout, None, &String::new).await;
}

/// [`all_scored`]; a timeout panics with a diagnosis of the database, the press queue and the
/// in-process `handler` (if any), followed by `notes()`.
async fn all_scored_or_explain(
    s: &Stack,
    b: &Burst,
    timeout: Duration,
    handler: Option<&Handler>,
    notes: &dyn Fn() -> String,
) {
    let n = b.users.len() as i64;
    s.wait_or_explain("every player scored", timeout, handler, notes, || async {
        s.count("SELECT COUNT(*) FROM scores").await >= n
    })
    .await;
    s.wait_or_explain(
        "press queue drained",
        Duration::from_secs(60),
        handler,
        notes,
        || async { s.depth(&s.press.url).await == 0 },
    )
    .await;
}

async fn round(s: &Stack) {
    s.open_round("r", Duration::from_secs(1), Duration::from_secs(3600))
        .await;
    s.wait_rounds(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_sigkill_during_a_10000_press_burst_then_restart() {
    let s = Stack::new().await;
    s.open_round("r", Duration::from_secs(1), Duration::from_secs(3600))
        .await;
    let b = burst(&s, "kill", 5000, 1).await; // 10,000 presses, half of them duplicates
    let mut child = s.spawn_process(&[("BUTTONPARTY_BATCH_SIZE", "200")]);
    wait_for("a fifth applied", Duration::from_secs(120), || async {
        s.count("SELECT COUNT(*) FROM scores").await > 1000
    })
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let restarted = Instant::now();
    let mut child = s.spawn_process(&[]);
    all_scored(&s, &b, Duration::from_secs(240)).await;
    let drain = restarted.elapsed();
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let (applied, lost, double) = outcome(&s, &b).await;
    let dead = s.depth(&s.press.dlq_url).await;
    report(Figure {
        scenario: "1. SIGKILL mid-burst (10,000 presses, 5,000 duplicates), restart",
        sent: b.sent,
        applied,
        dead_lettered: dead,
        lost: lost + dead as i64,
        double,
        figure: format!("drained {:.1} s after restart", drain.as_secs_f64()),
    });
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s02_sigterm_mid_batch_exits_0_in_time() {
    // The restarted handler runs in this process: its warnings and info lines go to the test's
    // output (shown if the scenario fails).
    log_to_test_output();
    let s = Stack::new().await;
    s.open_round("r", Duration::from_secs(1), Duration::from_secs(3600))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    // Notifications are read as they come: sd_notify's send blocks once the socket holds
    // net.unix.max_dgram_qlen unread datagrams (10 on this machine), which would freeze the
    // child's single-threaded runtime (READY, STATUS on each database health change, STOPPING).
    let seen: Arc<Mutex<String>> = Arc::default();
    let notify_reader = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf).await {
                let mut seen = seen.lock().unwrap();
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                seen.push('\n');
            }
        }
    });
    let mut child = s.spawn_process(&[
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ("BUTTONPARTY_BATCH_SIZE", "100"),
    ]);
    let (child_log, log_reader) = tap(child.stderr.take().unwrap());
    let b = burst(&s, "term", 3000, 0).await;
    s.wait_or_explain(
        "work in flight",
        Duration::from_secs(60),
        None,
        &|| format!("child log (tail):\n{}", tapped(&child_log, 8000)),
        || async { s.count("SELECT COUNT(*) FROM scores").await > 200 },
    )
    .await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    let sent_term = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = match tokio::time::timeout(Duration::from_secs(45), child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => panic!(
            "no exit inside the 45 s stop timeout; child log (tail):\n{}",
            tapped(&child_log, 8000)
        ),
    };
    let took = sent_term.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "child log (tail):\n{}",
        tapped(&child_log, 8000)
    );
    // Every datagram was queued before the child exited; let the reader take the last ones.
    let mut notifications = String::new();
    for _ in 0..10 {
        notifications = seen.lock().unwrap().clone();
        if notifications.contains("STOPPING=1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    notify_reader.abort();
    assert!(notifications.contains("STOPPING=1"), "{notifications}");
    // The child's log to its end (the pipe closed when it exited).
    let _ = tokio::time::timeout(Duration::from_secs(5), log_reader).await;
    let h = s.spawn_handler().await;
    all_scored_or_explain(&s, &b, Duration::from_secs(120), Some(&h), &|| {
        format!(
            "child: {status}, {:.2} s after SIGTERM; notifications: {notifications:?}\n\
             child log (tail, BUTTONPARTY_LOG=info):\n{}",
            took.as_secs_f64(),
            tapped(&child_log, 12_000)
        )
    })
    .await;
    h.stop().await;
    let (applied, lost, double) = outcome(&s, &b).await;
    report(Figure {
        scenario: "2. SIGTERM mid-batch",
        sent: b.sent,
        applied,
        dead_lettered: 0,
        lost,
        double,
        figure: format!("STOPPING=1 seen, exit 0 after {:.2} s", took.as_secs_f64()),
    });
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s03_processing_slower_than_the_visibility_timeout() {
    let s = Stack::with(QueueOptions {
        visibility_secs: 2,
        max_receive_count: 5,
    })
    .await;
    let h = s.spawn_handler().await;
    round(&s).await;
    // A player's row is locked for 8 s: the batch that contains them waits that long.
    s.seed_users(&["blocker".to_string()]).await;
    let mut lock = sqlx::MySqlConnection::connect(&s.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("SELECT * FROM users WHERE username = 'blocker' FOR UPDATE")
        .execute(&mut lock)
        .await
        .unwrap();
    let mut b = burst(&s, "slow", 500, 0).await;
    s.press.send(&s.sqs, &press("blocker")).await;
    b.users.push("blocker".into());
    b.sent += 1;
    tokio::time::sleep(Duration::from_secs(8)).await;
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    all_scored(&s, &b, Duration::from_secs(60)).await;
    let t = h.stats.totals();
    h.stop().await;
    let (applied, lost, double) = outcome(&s, &b).await;
    assert_eq!(
        t.redelivered, 0,
        "the heartbeat kept every held message invisible"
    );
    assert!(t.heartbeats > 0);
    report(Figure {
        scenario: "3. processing slower than the visibility timeout (2 s, held 8 s)",
        sent: b.sent,
        applied,
        dead_lettered: s.depth(&s.press.dlq_url).await,
        lost,
        double,
        figure: format!("{} visibility extensions, 0 redeliveries", t.heartbeats),
    });
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s04_delete_with_a_stale_receipt_handle() {
    use incoming_handler::inflight::InFlight;
    use incoming_handler::queue::{Message, Queue, QueueKind};
    let s = Stack::new().await;
    let h = s.spawn_handler().await;
    round(&s).await;
    let b = burst(&s, "stale", 50, 0).await;
    all_scored(&s, &b, Duration::from_secs(60)).await;
    // A delete with receipt handles the queue no longer knows: counted, no crash.
    let wire = incoming_handler::sqs_wire::SqsWire::from_sdk(&s.sqs)
        .await
        .unwrap();
    let queue = Queue::discover(s.sqs.clone(), wire, QueueKind::Press, &s.press.url)
        .await
        .unwrap();
    let inflight = InFlight::new(10);
    let permits = inflight.reserve(2).await;
    let fake = |i: u32| Message {
        message_id: format!("gone-{i}"),
        receipt_handle: format!("stale-receipt-{i}"),
        body: press("stale-00000"),
        sent_at_ms: now_ms(),
        received_at: tokio::time::Instant::now(),
        receive_count: 1,
        attributes: Default::default(),
    };
    let held = inflight.hold(QueueKind::Press, vec![fake(1), fake(2)], permits);
    incoming_handler::consumer::delete(&queue, &h.stats, held).await;
    let refused = h.stats.totals().delete_failed;
    assert_eq!(refused, 2);
    // The handler is still running and still works.
    s.press.send(&s.sqs, &press("stale-00000")).await;
    wait_for("duplicate judged", Duration::from_secs(30), || async {
        s.depth(&s.press.url).await == 0
    })
    .await;
    assert!(!h.task.is_finished());
    h.stop().await;
    let (applied, lost, double) = outcome(&s, &b).await;
    report(Figure {
        scenario: "4. DeleteMessageBatch with stale receipt handles",
        sent: b.sent + 1,
        applied,
        dead_lettered: 0,
        lost,
        double,
        figure: format!("{refused} refused entries counted, handler kept running"),
    });
    s.cleanup().await;
}

/// Kills MariaDB and starts it again, even if the test fails.
struct MariaDbRestart;
impl MariaDbRestart {
    fn kill() -> Self {
        let _ = std::process::Command::new("pkill")
            .args(["-9", "-x", "mariadbd"])
            .status();
        MariaDbRestart
    }
}
impl Drop for MariaDbRestart {
    fn drop(&mut self) {
        let _ = std::process::Command::new("start-stop-daemon")
            .args([
                "--start",
                "--oknodo",
                "--background",
                "--exec",
                "/usr/sbin/mariadbd",
            ])
            .status();
    }
}

async fn mariadb_up() -> bool {
    let url = buttonparty::testing::env("BUTTONPARTY_TEST_DATABASE_URL");
    sqlx::MySqlConnection::connect(url.trim_end_matches('/'))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05a_database_killed_and_restarted() {
    let s = Stack::new().await;
    let h = s.spawn_handler().await;
    round(&s).await;
    let b = burst(&s, "dbkill", 3000, 3).await;
    wait_for("some applied", Duration::from_secs(60), || async {
        s.count("SELECT COUNT(*) FROM scores").await > 300
    })
    .await;
    let guard = MariaDbRestart::kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(guard);
    wait_for("MariaDB back", Duration::from_secs(60), mariadb_up).await;
    let back = Instant::now();
    // The test's own pool reconnects on use.
    all_scored(&s, &b, Duration::from_secs(120)).await;
    let recovery = back.elapsed();
    h.stop().await;
    let (applied, lost, double) = outcome(&s, &b).await;
    let dead = s.depth(&s.press.dlq_url).await;
    report(Figure {
        scenario: "5a. database killed (SIGKILL) for 5 s and restarted",
        sent: b.sent,
        applied,
        dead_lettered: dead,
        lost: lost + dead as i64,
        double,
        figure: format!(
            "all applied {:.1} s after the database was back",
            recovery.as_secs_f64()
        ),
    });
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05b_connection_reset_at_commit() {
    let s = Stack::new().await;
    let proxy = Proxy::start("127.0.0.1:3306".parse().unwrap()).await;
    let mut config = s.config();
    config.batch_size = 50;
    config.batch_linger = Duration::from_millis(5);
    let h = s.spawn_handler_with(config, &proxy.url(&s.db)).await;
    round(&s).await;
    let b = burst(&s, "reset", 3000, 4).await;
    // Reset every connection every 150 ms for 6 s: some resets land between COMMIT and its reply.
    let mut resets = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        proxy.cut().await;
        proxy.restore();
        resets += 1;
    }
    all_scored(&s, &b, Duration::from_secs(120)).await;
    let t = h.stats.totals();
    h.stop().await;
    let (applied, lost, double) = outcome(&s, &b).await;
    report(Figure {
        scenario: "5b. connection reset at commit (TCP proxy, 40 resets)",
        sent: b.sent,
        applied,
        dead_lettered: s.depth(&s.press.dlq_url).await,
        lost,
        double,
        figure: format!("{resets} resets, {} transactions retried", t.db_retries),
    });
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05c_database_cut_longer_than_the_redrive_budget() {
    let s = Stack::with(QueueOptions {
        visibility_secs: 2,
        max_receive_count: 2,
    })
    .await;
    let proxy = Proxy::start("127.0.0.1:3306".parse().unwrap()).await;
    let h = s.spawn_handler_with(s.config(), &proxy.url(&s.db)).await;
    round(&s).await;
    proxy.cut().await;
    let b = burst(&s, "cut", 1000, 5).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    proxy.restore();
    let back = Instant::now();
    all_scored(&s, &b, Duration::from_secs(120)).await;
    let recovery = back.elapsed();
    h.stop().await;
    let (applied, lost, double) = outcome(&s, &b).await;
    let dead = s.depth(&s.press.dlq_url).await;
    assert_eq!(dead, 0);
    report(Figure {
        scenario: "5c. database cut 15 s (redrive budget 2 s × 2)",
        sent: b.sent,
        applied,
        dead_lettered: dead,
        lost: lost + dead as i64,
        double,
        figure: format!(
            "recovered {:.1} s after reconnect, 0 dead-lettered",
            recovery.as_secs_f64()
        ),
    });
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s06_read_only_for_10_s_as_in_an_aurora_failover() {
    let s = Stack::new().await;
    let (user, password) = s.app_user().await;
    let h = s
        .spawn_handler_with(s.config(), &s.url_for(&user, &password))
        .await;
    round(&s).await;
    let restore = RestoreGlobal("SET GLOBAL read_only = 0");
    root_sql("SET GLOBAL read_only = 1");
    let b = burst(&s, "ro", 1000, 4).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    drop(restore);
    let writable = Instant::now();
    all_scored(&s, &b, Duration::from_secs(90)).await;
    let reconnect = writable.elapsed();
    let t = h.stats.totals();
    h.stop().await;
    assert!(t.db_retries > 0, "the handler met error 1290 and retried");
    let (applied, lost, double) = outcome(&s, &b).await;
    report(Figure {
        scenario: "6. read_only = 1 for 10 s (error 1290)",
        sent: b.sent,
        applied,
        dead_lettered: s.depth(&s.press.dlq_url).await,
        lost,
        double,
        figure: format!(
            "{} retries, all applied {:.1} s after writable",
            t.db_retries,
            reconnect.as_secs_f64()
        ),
    });
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s07_deadlock_and_lock_wait_timeout() {
    let s = Stack::new().await;
    let restore = RestoreGlobal("SET GLOBAL innodb_lock_wait_timeout = 50");
    root_sql("SET GLOBAL innodb_lock_wait_timeout = 1");
    let h = s.spawn_handler().await;
    round(&s).await;
    let users: Vec<String> = (0..200).map(|i| format!("lock-{i:03}")).collect();
    s.seed_users(&users).await;
    // Lock-wait timeout: hold the last player's row for 4 s.
    let mut a = sqlx::MySqlConnection::connect(&s.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut a).await.unwrap();
    sqlx::query("SELECT * FROM users WHERE username = 'lock-199' FOR UPDATE")
        .execute(&mut a)
        .await
        .unwrap();
    s.send_all(
        &s.press,
        &users.iter().map(|u| press(u)).collect::<Vec<_>>(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Deadlock: while the handler waits on lock-199 holding lock-000..198, lock-000 is requested.
    let crossed = sqlx::query("SELECT * FROM users WHERE username = 'lock-000' FOR UPDATE")
        .execute(&mut a)
        .await;
    let _ = sqlx::query("ROLLBACK").execute(&mut a).await;
    let b = Burst { users, sent: 200 };
    all_scored(&s, &b, Duration::from_secs(60)).await;
    let t = h.stats.totals();
    h.stop().await;
    drop(restore);
    assert!(t.db_retries > 0, "lock waits/deadlocks were retried");
    let (applied, lost, double) = outcome(&s, &b).await;
    report(Figure {
        scenario: "7. lock-wait timeout (1 s) and crossed transactions",
        sent: b.sent,
        applied,
        dead_lettered: 0,
        lost,
        double,
        figure: format!(
            "{} retries; crossed lock {}",
            t.db_retries,
            if crossed.is_err() {
                "was the deadlock victim"
            } else {
                "won"
            }
        ),
    });
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s08_secret_rotation() {
    let s = Stack::new().await;
    let (user, old_password) = s.app_user().await;
    let aws = buttonparty::testing::aws_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let secret_id = format!("test/{}", s.db.name);
    let secret = |password: &str| {
        serde_json::json!({"username": user, "password": password, "host": "127.0.0.1", "port": 3306, "dbname": s.db.name}).to_string()
    };
    secrets
        .create_secret()
        .name(&secret_id)
        .secret_string(secret(&old_password))
        .send()
        .await
        .unwrap();
    let settings = DatabaseSettings {
        secret_id: Some(secret_id.clone()),
        url: None,
        ..DatabaseSettings::from_url("mysql://unused@localhost/x")
    };
    let db = Database::new(&settings, Some(&aws)).await.unwrap();
    let h = s.spawn_handler_on(s.config(), db.clone()).await;
    round(&s).await;
    let first = burst(&s, "rot-a", 200, 0).await;
    all_scored(&s, &first, Duration::from_secs(60)).await;
    // Rotate: the database first (and drop the sessions), the secret 3 s later.
    let new_password = format!("sentinel-pw-new-{:016x}", rand::random::<u64>());
    for host in ["%", "localhost"] {
        root_sql(&format!(
            "ALTER USER '{user}'@'{host}' IDENTIFIED BY '{new_password}'"
        ));
    }
    let ids: Vec<i64> = {
        let mut admin = sqlx::MySqlConnection::connect(s.db.url.rsplit_once('/').unwrap().0)
            .await
            .unwrap();
        let rows = sqlx::query("SELECT id FROM information_schema.processlist WHERE user = ?")
            .bind(&user)
            .fetch_all(&mut admin)
            .await
            .unwrap();
        rows.iter().map(|r| r.get::<i64, _>(0)).collect()
    };
    for id in ids {
        root_sql(&format!("KILL {id}"));
    }
    let reads_before = db.secret_reads();
    let second = burst(&s, "rot-b", 300, 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    secrets
        .put_secret_value()
        .secret_id(&secret_id)
        .secret_string(secret(&new_password))
        .send()
        .await
        .unwrap();
    let visible = Instant::now();
    let all = Burst {
        users: first.users.iter().chain(&second.users).cloned().collect(),
        sent: first.sent + second.sent,
    };
    all_scored(&s, &all, Duration::from_secs(60)).await;
    let recovered = visible.elapsed();
    let t = h.stats.totals();
    let reads = db.secret_reads() - reads_before;
    h.stop().await;
    assert!(t.access_denied > 0, "the old password was refused");
    assert!(
        reads <= t.access_denied,
        "at most one secret read per 1045 ({reads} reads, {} refusals)",
        t.access_denied
    );
    let (applied, lost, double) = outcome(&s, &all).await;
    report(Figure {
        scenario: "8. secret rotation (ALTER USER, secret updated 3 s later)",
        sent: all.sent,
        applied,
        dead_lettered: 0,
        lost,
        double,
        figure: format!(
            "{} refusals (1045), {reads} secret reads, all applied {:.1} s after the new value was visible",
            t.access_denied,
            recovered.as_secs_f64()
        ),
    });
    let _ = secrets
        .delete_secret()
        .secret_id(&secret_id)
        .force_delete_without_recovery(true)
        .send()
        .await;
    s.cleanup().await;
}

/// Runs `scripts/dev-stack <cmd>`.
async fn dev_stack(cmd: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/dev-stack");
    let status = tokio::process::Command::new(script)
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "scripts/dev-stack {cmd}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s09_emulator_stopped_and_started_again() {
    let own =
        tokio::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/dev-stack"))
            .arg("pid")
            .stdout(Stdio::null())
            .status()
            .await
            .unwrap()
            .success();
    assert!(
        own,
        "this scenario restarts the LocalStack of scripts/dev-stack; run it through scripts/faults"
    );
    let s = Stack::new().await;
    let h = s.spawn_handler().await;
    round(&s).await;
    let before = burst(&s, "emu-a", 300, 0).await;
    all_scored(&s, &before, Duration::from_secs(60)).await;
    dev_stack("down").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !h.task.is_finished(),
        "the handler keeps running without its queues"
    );
    dev_stack("up").await;
    s.recreate_queues().await;
    let back = Instant::now();
    let after = burst(&s, "emu-b", 300, 0).await;
    let all = Burst {
        users: before.users.iter().chain(&after.users).cloned().collect(),
        sent: before.sent + after.sent,
    };
    all_scored(&s, &all, Duration::from_secs(90)).await;
    let recovery = back.elapsed();
    h.stop().await;
    let (applied, lost, double) = outcome(&s, &all).await;
    report(Figure {
        scenario: "9. emulator stopped and started again (queues recreated)",
        sent: all.sent,
        applied,
        dead_lettered: 0,
        lost,
        double,
        figure: format!(
            "receiving backed off; all applied {:.1} s after the queues were back",
            recovery.as_secs_f64()
        ),
    });
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s11_secrets_and_tokens_never_reach_the_logs() {
    let s = Stack::new().await;
    let (user, password) = s.app_user().await;
    let url = s.url_for(&user, &password);
    let tokens: Vec<String> = (0..5)
        .map(|i| format!("sentinel-token-{i}-{:08x}", rand::random::<u32>()))
        .collect();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_incoming-handler"));
    cmd.arg("run")
        .env_remove("BUTTONPARTY_DB_SECRET_ID")
        .envs(s.env(&s.config(), &url))
        .env("BUTTONPARTY_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    // Read both pipes while the handler runs (trace logging fills a pipe buffer quickly).
    let readers = [
        read_all(child.stdout.take().unwrap()),
        read_all(child.stderr.take().unwrap()),
    ];
    let mut bodies: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"username": format!("tok-{i}"), "token": t}).to_string())
        .collect();
    // Malformed ones carrying a token too.
    bodies.push(serde_json::json!({"username": "", "token": tokens[0]}).to_string());
    bodies.push(
        serde_json::json!({"username": "x", "token": format!("{}{}", tokens[1], "y".repeat(5000))})
            .to_string(),
    );
    s.send_all(&s.add_user, &bodies).await;
    let registered = tokio::time::timeout(Duration::from_secs(60), async {
        while !(s.count("SELECT COUNT(*) FROM push_endpoints").await == 5
            && s.depth(&s.add_user.url).await == 0)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = child.wait().await;
    let mut out = String::new();
    for r in readers {
        out.push_str(&r.await.unwrap());
    }
    assert!(
        registered.is_ok(),
        "players registered; log:\n{}",
        &out[out.len().saturating_sub(3000)..]
    );
    assert!(out.len() > 1000, "trace logging produced output");
    let mut leaks = 0;
    for secret in tokens.iter().chain([&password]) {
        if out.contains(secret.as_str()) {
            leaks += 1;
            eprintln!("leaked: {secret}");
        }
    }
    report(Figure {
        scenario: "11. sentinel password and push tokens in logs (trace level)",
        sent: bodies.len() as u64,
        applied: 5,
        dead_lettered: s.depth(&s.add_user.dlq_url).await,
        lost: 0,
        double: 0,
        figure: format!("{leaks} leaks in {} bytes of log", out.len()),
    });
    assert_eq!(leaks, 0);
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s12_arbitrary_bodies_on_every_queue_apply_or_dead_letter() {
    use rand::{Rng, SeedableRng};
    let s = Stack::new().await;
    let h = s.spawn_handler().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let pieces = [
        "'; DROP TABLE users; --",
        "\"",
        "\\",
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "null",
        "1.5",
        "-1",
        "username",
        "token",
        "powerUpType",
        "quantity",
        "level",
        "round_id",
        "FREEZE",
        "extender",
        "\u{202e}",
        "🙂",
        "\u{7f}",
        "\t",
        "a",
        "0",
        "1e400",
        "true",
        "opens_at_ms",
        "closes_at_ms",
    ];
    let mut sent = 0u64;
    for q in [&s.add_user, &s.press, &s.powerup, &s.timestamp] {
        let mut bodies = Vec::new();
        for _ in 0..100 {
            let n = rng.random_range(1..12);
            let body: String = (0..n)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            bodies.push(body);
        }
        // And well-formed ones with hostile names.
        bodies.push(
            serde_json::json!({"username": "'; DROP TABLE users; --", "token": "t"}).to_string(),
        );
        bodies.push(
            serde_json::json!({"username": "🙂\u{202e}", "powerUpType": "freeze", "level": 6})
                .to_string(),
        );
        sent += bodies.len() as u64;
        s.send_all(q, &bodies).await;
    }
    wait_for("every queue judged", Duration::from_secs(60), || async {
        let mut empty = true;
        for q in [&s.add_user, &s.press, &s.powerup, &s.timestamp] {
            empty &= s.depth(&q.url).await == 0;
        }
        empty
    })
    .await;
    assert!(!h.task.is_finished(), "the handler survived");
    let t = h.stats.totals();
    h.stop().await;
    let mut dead = 0;
    for q in [&s.add_user, &s.press, &s.powerup, &s.timestamp] {
        dead += s.depth(&q.dlq_url).await;
    }
    // Every stored username is valid.
    let names: Vec<Vec<u8>> = sqlx::query("SELECT username FROM users")
        .fetch_all(&s.db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let invalid = names
        .iter()
        .filter(|n| {
            buttonparty::messages::Username::parse(String::from_utf8_lossy(n).into_owned()).is_err()
                || std::str::from_utf8(n).is_err()
        })
        .count();
    assert_eq!(invalid, 0);
    assert!(
        names
            .iter()
            .any(|n| n == "'; DROP TABLE users; --".as_bytes())
    );
    // Kept pending (a valid press or purchase by a name nobody registered) counts as taken.
    let judged = t.applied + t.rejected + t.pending + t.malformed;
    report(Figure {
        scenario: "12. 408 arbitrary bodies over the four queues",
        sent,
        applied: t.applied,
        dead_lettered: dead,
        lost: sent as i64 - judged as i64,
        double: 0,
        figure: format!(
            "0 panics, {} malformed dead-lettered, {invalid} invalid rows",
            t.malformed
        ),
    });
    s.cleanup().await;
}
