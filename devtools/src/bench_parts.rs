//! The measurements of `bp-dev bench` (issue 7, a–e). Each takes what was set up for it and
//! returns its figures; [`crate::bench`] runs them in order on a quiet machine.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use sqlx::mysql::MySqlPool;
use sqlx::{Connection as _, MySql, QueryBuilder};
use tokio::sync::Notify;

use crate::bench_env::{BenchDb, HandlerQueues, player_name, questions, questions_overhead};
use crate::bench_proc::Child;
use crate::bench_report::{DrainRun, HandlerRun, Latency, RoundOpening, median};
use crate::players::press_body;
use crate::progress::{Progress, ProgressMode};
use crate::round::parse_round_json;
use crate::send::{SendOptions, now_ms, send_bodies};

/// Enqueues one press per player `0..n` (in a shuffled order), then waits until the queue
/// shows all of them.
pub async fn enqueue_presses(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    n: u64,
    mode: ProgressMode,
) -> anyhow::Result<()> {
    let mut order: Vec<u64> = (0..n).collect();
    // A fixed shuffle: the queue does not keep order anyway, but batches should not be sorted.
    order.sort_by_key(|i| crate::bench_env::mix(*i));
    let bodies: Vec<String> = order.iter().map(|i| press_body(&player_name(*i))).collect();
    let progress = Progress::new("enqueue", n, mode);
    let stats = send_bodies(sqs, url, bodies, SendOptions::default(), &progress).await;
    progress.finish(format!("{:.0} msg/s", stats.per_sec()));
    if stats.failed > 0 {
        bail!("{} presses could not be enqueued", stats.failed);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = crate::queues::depth(sqs, url).await?;
        if d.visible >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the queue shows {} of {n} presses after enqueuing",
                d.visible
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// a. The queue's ceiling: `receivers` tasks, each receiving 10 (asking for the same attributes
/// as the handler) and deleting them with one `DeleteMessageBatch`, until `n` are deleted.
/// Returns the time taken and the CPU seconds this process used meanwhile (the drainer's own
/// cost: the floor of what receiving and deleting through the SDK costs).
pub async fn queue_ceiling(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    n: u64,
    receivers: u32,
    mode: ProgressMode,
) -> anyhow::Result<DrainRun> {
    let deleted = Arc::new(AtomicU64::new(0));
    let cpu0 = crate::bench_proc::usage(std::process::id())?.cpu_secs;
    let finished = Arc::new(Notify::new());
    let progress = Progress::new("a. drain", n, mode);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..receivers {
        let (sqs, url, deleted, finished, progress) = (
            sqs.clone(),
            url.to_owned(),
            deleted.clone(),
            finished.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            while deleted.load(Ordering::Relaxed) < n {
                let received = sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(2)
                    .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                    .message_system_attribute_names(
                        MessageSystemAttributeName::ApproximateReceiveCount,
                    )
                    .message_attribute_names("All")
                    .customize()
                    .mutate_request(keep_alive)
                    .send()
                    .await;
                let msgs = match received {
                    Ok(out) => out.messages.unwrap_or_default(),
                    Err(e) => {
                        progress.println(format!(
                            "receive failed: {}",
                            buttonparty::aws::error_text(&e)
                        ));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if msgs.is_empty() {
                    continue;
                }
                let entries: Vec<_> = msgs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle()?)
                            .build()
                            .ok()
                    })
                    .collect();
                match sqs
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .customize()
                    .mutate_request(keep_alive)
                    .send()
                    .await
                {
                    Ok(out) => {
                        let k = out.successful.len() as u64;
                        let before = deleted.fetch_add(k, Ordering::Relaxed);
                        progress.inc(k);
                        if before < n && before + k >= n {
                            finished.notify_one();
                        }
                    }
                    // Not deleted: they come back after the visibility timeout.
                    Err(e) => progress.println(format!(
                        "delete failed: {}",
                        buttonparty::aws::error_text(&e)
                    )),
                }
            }
        });
    }
    let limit = Duration::from_secs(120 + n / 50);
    let done = tokio::time::timeout(limit, finished.notified()).await;
    let secs = started.elapsed().as_secs_f64();
    let cpu = crate::bench_proc::usage(std::process::id())?.cpu_secs - cpu0;
    tasks.abort_all();
    if done.is_err() {
        bail!(
            "the drainer deleted {} of {n} presses in {} s",
            deleted.load(Ordering::Relaxed),
            limit.as_secs()
        );
    }
    progress.finish(format!("{:.0} presses/s", n as f64 / secs));
    Ok(DrainRun {
        secs,
        per_sec: n as f64 / secs,
        cpu_secs: cpu,
    })
}

/// Asks the server to keep the connection open, as the handler's queue client does
/// (`incoming_handler::queue`): LocalStack closes it after each response otherwise, and the
/// drainer must not pay a TCP handshake per request that the handler does not.
fn keep_alive(req: &mut aws_smithy_runtime_api::http::Request) {
    req.headers_mut().insert("connection", "keep-alive");
}

/// b. The database's ceiling: the scoring writes of players `0..n` in round
/// (`round_id`, `opens_at`) — their scored press events, then the players' new score, streak
/// and last round — as two multi-row statements per 500-row transaction on one connection.
/// Returns the seconds.
pub async fn database_ceiling(
    db: &BenchDb,
    n: u64,
    round_id: &str,
    opens_at: i64,
) -> anyhow::Result<f64> {
    const ROWS: u64 = 500;
    let mut conn = db.pool.acquire().await?;
    let pressed_at = opens_at + 1000;
    let started = Instant::now();
    let mut start = 0;
    while start < n {
        let end = (start + ROWS).min(n);
        let mut tx = conn.begin().await?;
        let _ = round_id;
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO player_events (username, sent_at_ms, message_id, kind, outcome, \
             round_opens_at_ms, streak, points, score_after, streak_after, last_scored_after, \
             received_at_ms) ",
        );
        q.push_values(start..end, |mut b, i| {
            b.push_bind(player_name(i).into_bytes())
                .push_bind(pressed_at)
                .push_bind(format!("{:032x}-bench", crate::bench_env::mix(i)).into_bytes())
                .push_bind("PRESS")
                .push_bind("scored")
                .push_bind(opens_at)
                .push_bind(1_u32)
                .push_bind(1_i64)
                .push_bind(1_i64)
                .push_bind(1_u32)
                .push_bind(opens_at)
                .push_bind(pressed_at);
        });
        q.build().execute(&mut *tx).await?;
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO users (username, score, streak, last_scored_opens_at_ms, created_at_ms) ",
        );
        q.push_values(start..end, |mut b, i| {
            b.push_bind(player_name(i).into_bytes())
                .push_bind(1_i64)
                .push_bind(1_u32)
                .push_bind(opens_at)
                .push_bind(0_i64);
        });
        q.push(
            " ON DUPLICATE KEY UPDATE score = VALUES(score), streak = VALUES(streak), \
             last_scored_opens_at_ms = VALUES(last_scored_opens_at_ms)",
        );
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        start = end;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The environment of the handler binary on the run's queues, topic and `db`. The rest of the
/// environment (AWS settings, any `BUTTONPARTY_*` tuning such as `BUTTONPARTY_BATCH_LINGER_MS`)
/// is inherited; the dev stack's secret is not used.
pub fn handler_env(
    queues: &HandlerQueues,
    topic_arn: &str,
    app_arn: &str,
    db: &BenchDb,
) -> Vec<(String, String)> {
    [
        ("BUTTONPARTY_ADD_USER_QUEUE_URL", queues.add_user.as_str()),
        ("BUTTONPARTY_PRESS_QUEUE_URL", &queues.press),
        ("BUTTONPARTY_POWERUP_QUEUE_URL", &queues.powerup),
        ("BUTTONPARTY_TIMESTAMP_QUEUE_URL", &queues.timestamp),
        ("BUTTONPARTY_TOPIC_ARN", topic_arn),
        ("BUTTONPARTY_PLATFORM_APPLICATION_ARN", app_arn),
        ("BUTTONPARTY_DATABASE_URL", &db.url),
        ("BUTTONPARTY_LOG", "info"),
        ("BUTTONPARTY_LOG_FORMAT", "json"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Variables of the dev stack's own resources that must not reach the children.
pub const NOT_INHERITED: &[&str] = &[
    "BUTTONPARTY_DB_SECRET_ID",
    "BUTTONPARTY_DB_HOST",
    "BUTTONPARTY_DB_NAME",
    "JOURNAL_STREAM",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
];

/// The handler's log line that says it is receiving.
pub const HANDLER_READY: &str = "incoming handler ready";

/// What c runs on.
#[derive(Debug, Clone, Copy)]
pub struct EndToEnd<'a> {
    /// `incoming-handler`.
    pub handler: &'a Path,
    /// Its environment ([`handler_env`]).
    pub env: &'a [(String, String)],
    /// Its database.
    pub db: &'a BenchDb,
    /// The server's admin URL (for `Questions`).
    pub admin_url: &'a str,
    /// The open round the presses belong to.
    pub round_opens_at: i64,
    /// Presses in the queue.
    pub n: u64,
    /// Progress display.
    pub mode: ProgressMode,
    /// `perf record` output, if profiling.
    pub perf_record: Option<&'a Path>,
}

/// c. The handler end to end: starts `incoming-handler run` on `db`, whose round
/// `round_opens_at` holds no press yet while the press queue holds `n` presses of registered
/// players; returns when all `n` are in the ledger, with the CPU time and peak RSS of the process
/// at that moment and the statements the server executed meanwhile.
pub async fn handler_end_to_end(run: EndToEnd<'_>) -> anyhow::Result<HandlerRun> {
    let EndToEnd {
        handler,
        env,
        db,
        admin_url,
        round_opens_at,
        n,
        mode,
        perf_record,
    } = run;
    let mut admin = sqlx::MySqlConnection::connect(admin_url).await?;
    let overhead = questions_overhead(&mut admin).await?;
    let mut monitor = db.pool.acquire().await?;
    let progress = Progress::new("c. handler", n, mode);

    let q0 = questions(&mut admin).await?;
    let started = Instant::now();
    let mut child = Child::spawn(
        "incoming-handler",
        handler,
        &["run"],
        env,
        NOT_INHERITED,
        Some(HANDLER_READY),
    )?;
    let mut perf = match perf_record {
        Some(out) => Some(start_perf(child.pid(), out)?),
        None => None,
    };
    let mut polls = 0_u64;
    let limit = Duration::from_secs(120 + n / 50);
    let (secs, usage) = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        child.check_running()?;
        let scored: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM scores WHERE round_opens_at_ms = ?")
                .bind(round_opens_at)
                .fetch_one(&mut *monitor)
                .await?;
        polls += 1;
        if scored as u64 >= n {
            let secs = started.elapsed().as_secs_f64();
            break (secs, child.usage()?);
        }
        progress.inc((scored as u64).saturating_sub(progress.position()));
        if started.elapsed() > limit {
            bail!(
                "the handler scored {scored} of {n} presses in {} s; its last log lines:\n{}",
                limit.as_secs(),
                child.tail()
            );
        }
    };
    let q1 = questions(&mut admin).await?;
    if let Some(perf) = perf.as_mut() {
        stop_perf(perf).await;
    }
    // Every poll is one statement, and so is each read of the counter.
    let statements = (q1 - q0).saturating_sub(polls + overhead);
    progress.inc(n.saturating_sub(progress.position()));
    progress.finish(format!("{:.0} presses/s", n as f64 / secs));

    let status = child.terminate(Duration::from_secs(60)).await?;
    drop(monitor);
    let _ = admin.close().await;
    if !status.success() {
        bail!("the handler exited with {status}");
    }
    let batches = child.batch_totals();
    let (startup_secs, startup_cpu_secs) = child.ready_at().map_or((0.0, 0.0), |(at, cpu)| {
        (at.duration_since(started).as_secs_f64(), cpu)
    });
    Ok(HandlerRun {
        startup_secs,
        startup_cpu_secs,
        secs,
        per_sec: n as f64 / secs,
        cpu_secs: usage.cpu_secs,
        cpu_system_secs: usage.system_secs,
        peak_rss_bytes: usage.peak_rss_bytes,
        statements,
        batches: batches.map(|b| b.0),
        batch_avg: batches.and_then(|(b, items)| items.checked_div(b)),
    })
}

/// `perf record` of the process `pid` into `out`: CPU-clock samples (hardware counters are
/// often missing in VMs) with DWARF call graphs (release builds keep no frame pointers).
fn start_perf(pid: u32, out: &Path) -> anyhow::Result<tokio::process::Child> {
    tokio::process::Command::new("perf")
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "499",
            "--call-graph",
            "dwarf,16384",
            "-o",
        ])
        .arg(out)
        .args(["-p", &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting perf record (is perf installed?)")
}

/// Stops `perf record` with SIGINT (so it writes its file) and waits for it.
async fn stop_perf(perf: &mut tokio::process::Child) {
    if let Some(pid) = perf.id() {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(120), perf.wait()).await;
}

/// Settings of the round-opening part.
#[derive(Debug, Clone)]
pub struct OpeningSetup<'a> {
    /// `outgoing-handler`.
    pub outgoing: &'a Path,
    /// Its environment (timestamp queue, topic, state directory).
    pub outgoing_env: Vec<(String, String)>,
    /// The press queue.
    pub press_url: &'a str,
    /// Timed rounds (after one untimed warm-up round).
    pub trials: u32,
}

/// d. Round opening on `db` with `players` registered and a handler already running: for each
/// trial, the time from starting `outgoing-handler open-round` until the round is recorded and
/// a press sent once the round was announced (as a phone does on the push) is in the ledger.
pub async fn round_opening(
    sqs: &aws_sdk_sqs::Client,
    setup: &OpeningSetup<'_>,
    handler: &mut Child,
    db: &BenchDb,
    players: u64,
) -> anyhow::Result<RoundOpening> {
    let mut trials = Vec::new();
    let mut announce = Vec::new();
    for trial in 0..=setup.trials {
        // Players spread over the whole table.
        let index = mix_index(trial) % players.max(1);
        let name = player_name(index);
        let started = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(setup.outgoing)
                .arg("open-round")
                .envs(
                    setup
                        .outgoing_env
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .env_remove("JOURNAL_STREAM")
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("open-round did not finish within 60 s")?
        .context("running outgoing-handler open-round")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "open-round failed ({}): {}{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let announced_ms = started.elapsed().as_secs_f64() * 1000.0;
        let round = parse_round_json(stdout.lines().next().unwrap_or_default())?;
        sqs.send_message()
            .queue_url(setup.press_url)
            .message_body(press_body(&name))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("sending a press: {}", buttonparty::aws::error_text(&e))
            })?;
        let deadline = started + Duration::from_secs(60);
        loop {
            let scored: Option<i64> = sqlx::query_scalar(
                "SELECT points FROM scores WHERE username = ? AND round_opens_at_ms = ?",
            )
            .bind(name.as_bytes())
            .bind(round.opens_at_ms)
            .fetch_optional(&db.pool)
            .await?;
            if scored.is_some() {
                break;
            }
            handler.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "the press of {name} in round {} was not scored within 60 s; the handler's last log lines:\n{}",
                    round.round_id,
                    handler.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if trial > 0 {
            trials.push(ms);
            announce.push(announced_ms);
        }
        // Let the handler go quiet (its catch-up polls) before the next round.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(RoundOpening {
        players,
        median_ms: median(&trials),
        trials_ms: trials,
        announce_median_ms: median(&announce),
    })
}

fn mix_index(trial: u32) -> u64 {
    crate::bench_env::mix(u64::from(trial) + 1_000_003)
}

/// e. Sequential `GET /fetch/lb` and `GET /fetch/self?username=` (players spread over the
/// whole table, so over the whole ranking) on one keep-alive connection, after a warm-up.
/// Returns (leaderboard, self, whether every self answer had a rank).
pub async fn read_latency(
    base: &str,
    players: u64,
    requests: usize,
) -> anyhow::Result<(Latency, Latency, bool)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()?;
    let lb_url = format!("{base}/fetch/lb");
    let get = |url: String| {
        let client = client.clone();
        async move {
            let t = Instant::now();
            let resp = client.get(&url).send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if !status.is_success() {
                bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
            }
            anyhow::Ok((ms, body))
        }
    };
    let self_url = |k: usize| {
        let index = (k as u64 * players / requests.max(1) as u64 + 7) % players.max(1);
        format!("{base}/fetch/self?username={}", player_name(index))
    };
    for k in 0..(requests / 20).max(10) {
        get(lb_url.clone()).await?;
        get(self_url(k * 7919 % requests.max(1))).await?;
    }
    let mut lb = Vec::with_capacity(requests);
    for _ in 0..requests {
        lb.push(get(lb_url.clone()).await?.0);
    }
    let mut me = Vec::with_capacity(requests);
    let mut ranked = true;
    for k in 0..requests {
        let (ms, body) = get(self_url(k)).await?;
        me.push(ms);
        let v: serde_json::Value =
            serde_json::from_slice(&body).context("GET /fetch/self: not JSON")?;
        ranked &= v.get("rank").is_some_and(|r| r.is_u64());
    }
    Ok((Latency::of(&lb), Latency::of(&me), ranked))
}

/// Waits until `GET /fetch/lb` answers 200.
pub async fn wait_fetch_ready(
    base: &str,
    server: &mut Child,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(format!("{base}/fetch/lb")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        server.check_running()?;
        if Instant::now() > deadline {
            bail!(
                "the fetch API did not answer within {} s; its last log lines:\n{}",
                timeout.as_secs(),
                server.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A round "now": (id, opens_at_ms, closes_at_ms), open for a day.
pub fn open_round_now(label: &str) -> (String, i64, i64) {
    let opens = now_ms() - 1000;
    (format!("{opens}-{label}"), opens, opens + 86_400_000)
}

/// Waits until a queue holds nothing (visible, in flight, delayed), up to `timeout`.
pub async fn wait_empty(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let d = crate::queues::depth(sqs, url).await?;
        if d.total() == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} still holds {d:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A pool's rows in `table` (for checks).
pub async fn count_rows(pool: &MySqlPool, table: &'static str) -> anyhow::Result<i64> {
    let sql = match table {
        "users" => "SELECT COUNT(*) FROM users",
        "scores" => "SELECT COUNT(*) FROM scores",
        _ => bail!("unknown table {table}"),
    };
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}
