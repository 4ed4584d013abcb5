//! The `outgoing-handler` binary: `open-round`, the `run` daemon under a fake systemd notify
//! socket, `SIGTERM`, and configuration errors.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Stack, round_of};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use outgoing_handler::state::{StateFile, Store};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};
use tokio::time::{Instant, timeout};

const BIN: &str = env!("CARGO_BIN_EXE_outgoing-handler");

/// The binary with a clean environment for the handler's own settings: text logs on stderr, no
/// systemd variables, no state directory from the dev stack.
fn handler() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "BUTTONPARTY_STATE_DIR",
        "BUTTONPARTY_TIMESTAMP_QUEUE_URL",
        "BUTTONPARTY_TOPIC_ARN",
        "BUTTONPARTY_PRESS_WINDOW_SECS",
        "BUTTONPARTY_ROUND_MIN_GAP_SECS",
        "BUTTONPARTY_ROUND_CHANCE_PER_SEC",
        "BUTTONPARTY_PUSH_AUDIENCE",
        "BUTTONPARTY_PUSH_RATE_PER_SEC",
        "BUTTONPARTY_METRICS",
        "STATE_DIRECTORY",
        "JOURNAL_STREAM",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("BUTTONPARTY_LOG_FORMAT", "text")
        .env("BUTTONPARTY_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// The handler pointed at `stack`'s queue and topic, keeping its state in `state_dir`.
fn handler_for(stack: &Stack, state_dir: &Path) -> Command {
    let mut cmd = handler();
    cmd.env("BUTTONPARTY_TIMESTAMP_QUEUE_URL", &stack.timestamp.url)
        .env("BUTTONPARTY_TOPIC_ARN", &stack.topic_arn)
        .env("BUTTONPARTY_STATE_DIR", state_dir);
    cmd
}

/// A child's stderr, collected in the background.
struct Stderr {
    text: Arc<Mutex<String>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Stderr {
    fn collect(child: &mut Child) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let sink = text.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self { text, reader }
    }

    /// What was written so far.
    fn now(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Everything, once the child exited (its stderr reached end of file).
    async fn all(self) -> String {
        timeout(Duration::from_secs(5), self.reader)
            .await
            .expect("stderr closed")
            .expect("stderr reader");
        self.text.lock().unwrap().clone()
    }
}

/// A fake systemd notification socket.
struct NotifySocket {
    socket: UnixDatagram,
    /// Every state line received so far (`READY=1`, `STATUS=…`, …).
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(path: &Path) -> Self {
        Self {
            socket: UnixDatagram::bind(path).expect("bind notify socket"),
            seen: Vec::new(),
        }
    }

    /// Waits until a datagram holding the line `state` arrived; `false` after `limit`.
    async fn wait_for(&mut self, state: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.seen.iter().any(|s| s == state) {
                return true;
            }
            let mut buf = vec![0u8; 4096];
            let Ok(received) = timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.socket.recv(&mut buf),
            )
            .await
            else {
                return false;
            };
            let n = received.expect("recv on notify socket");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.extend(text.lines().map(str::to_owned));
        }
    }
}

fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id().expect("child still running")).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("send SIGTERM");
}

async fn open_round(stack: &Stack, state_dir: &Path) -> Value {
    open_round_with(stack, state_dir, &[]).await.0
}

/// `open-round` with extra environment variables; returns the round printed and stderr.
async fn open_round_with(stack: &Stack, state_dir: &Path, env: &[(&str, &str)]) -> (Value, String) {
    let out = handler_for(stack, state_dir)
        .envs(env.iter().copied())
        .arg("open-round")
        .output()
        .await
        .expect("run open-round");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "open-round failed: {:?}\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 stdout");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must be one JSON line: {stdout:?}");
    assert!(stdout.ends_with('\n'));
    let round: Value = serde_json::from_str(lines[0]).expect("stdout is JSON");
    assert!(stderr.contains("round opened"), "{stderr}");
    (round, stderr.into_owned())
}

#[tokio::test]
async fn open_round_prints_one_json_line_and_records_the_round() {
    let stack = Stack::new("og-bin-open").await;
    let dir = tempfile::tempdir().unwrap();
    let round = open_round(&stack, dir.path()).await;

    let fields: Vec<&str> = round
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields.len(), 4, "{round}");
    let id = round["round_id"].as_str().expect("round_id string");
    let opens = round["opens_at_ms"].as_i64().expect("opens_at_ms integer");
    let closes = round["closes_at_ms"]
        .as_i64()
        .expect("closes_at_ms integer");
    // LocalStack counts no subscription: no fan-out time, the default window.
    assert_eq!(closes - opens, 60_000, "default window");
    assert_eq!(round["window_ms"], 60_000);
    // Recorded in the state, so the daemon's gap restarts from it.
    let last = StateFile::new(dir.path()).load().unwrap().unwrap();
    assert_eq!((last.round_id.as_str(), last.opens_at_ms), (id, opens));
    // And sent to the timestamp queue.
    let stamps = stack.receive(&stack.timestamp.url, 1).await;
    assert_eq!(stamps.len(), 1);
    let stamped = round_of(&stamps[0]);
    assert_eq!(
        (
            stamped.round_id.as_str(),
            stamped.opens_at_ms,
            stamped.closes_at_ms
        ),
        (id, opens, closes)
    );
    stack.cleanup(&[]).await;
}

#[tokio::test]
async fn open_round_with_an_audience_closes_after_the_fan_out_and_prints_a_metric_line() {
    let stack = Stack::new("og-bin-fanout").await;
    let dir = tempfile::tempdir().unwrap();
    let (round, stderr) = open_round_with(
        &stack,
        dir.path(),
        &[
            ("BUTTONPARTY_PUSH_AUDIENCE", "1000000"),
            ("BUTTONPARTY_PUSH_RATE_PER_SEC", "10000"),
            ("BUTTONPARTY_METRICS", "emf"),
        ],
    )
    .await;
    let opens = round["opens_at_ms"].as_i64().unwrap();
    let closes = round["closes_at_ms"].as_i64().unwrap();
    // 60 s window + 1,000,000 pushes at 10,000/s.
    assert_eq!(closes - opens, 160_000, "{round}");
    assert_eq!(round["window_ms"], 60_000);
    let line = stderr.lines().find(|l| l.contains("round opened")).unwrap();
    for field in [
        "audience=1000000",
        "audience_source=override",
        "push_rate_per_sec=10000",
        "fan_out_ms=100000",
        "window_ms=60000",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
    // The push lives until the round closes, well past the 60 s window.
    let ttl: i64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ttl_secs="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ttl_secs in {line}"));
    assert!((150..=160).contains(&ttl), "ttl_secs={ttl}");
    // The metric line goes to stderr (stdout is the round's one line, checked above).
    let emf: Value = stderr
        .lines()
        .find(|l| l.starts_with('{') && l.contains("\"_aws\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no EMF line in {stderr}"));
    assert_eq!(emf["RoundsOpened"], 1);
    assert_eq!(emf["PushesPublished"], 1_000_000);
    assert_eq!(emf["Service"], "outgoing-handler");
    assert_eq!(
        emf["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "ButtonParty"
    );
    // The timestamp queue carries the later close and the base window.
    let stamped = round_of(&stack.receive(&stack.timestamp.url, 1).await[0]);
    assert_eq!(stamped.closes_at_ms, closes);
    assert_eq!(stamped.window_ms, Some(60_000));
    stack.cleanup(&[]).await;
}

#[tokio::test]
async fn run_keeps_the_gap_across_restarts_notifies_systemd_and_exits_0_on_sigterm() {
    const MIN_GAP_MS: i64 = 2_000;
    let stack = Stack::new("og-bin-run").await;
    let subscriber = stack.subscribe_queue().await;
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");

    // A round opened just before the daemon starts: its first round must wait out the gap.
    let first = open_round(&stack, &state_dir).await;

    let mut notify = NotifySocket::bind(&dir.path().join("notify.sock"));
    let mut child = handler_for(&stack, &state_dir)
        .arg("run")
        .env("BUTTONPARTY_ROUND_CHANCE_PER_SEC", "1")
        .env(
            "BUTTONPARTY_ROUND_MIN_GAP_SECS",
            (MIN_GAP_MS / 1000).to_string(),
        )
        .env("BUTTONPARTY_PRESS_WINDOW_SECS", "10")
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    let log = Stderr::collect(&mut child);

    assert!(
        notify.wait_for("READY=1", Duration::from_secs(30)).await,
        "no READY=1; log:\n{}",
        log.now()
    );
    // Wait for two rounds opened by the daemon (three in the queue with open-round's).
    let mut stamps = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stamps.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "rounds: {stamps:?}\n{}",
            log.now()
        );
        stamps.extend(stack.receive_batch(&stack.timestamp.url, 1).await);
    }
    assert!(notify.wait_for("WATCHDOG=1", Duration::from_secs(5)).await);

    sigterm(&child);
    let status = timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exited within 10 s of SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "log:\n{}", log.now());
    assert!(
        notify.wait_for("STOPPING=1", Duration::from_secs(1)).await,
        "no STOPPING=1: {:?}",
        notify.seen
    );

    // Every round, the one from open-round first; no gap shorter than the minimum.
    stamps.extend(stack.receive_batch(&stack.timestamp.url, 1).await);
    let mut rounds: Vec<_> = stamps.iter().map(round_of).collect();
    rounds.sort_by_key(|r| r.opens_at_ms);
    assert_eq!(rounds[0].round_id, first["round_id"].as_str().unwrap());
    for pair in rounds.windows(2) {
        let gap = pair[1].opens_at_ms - pair[0].opens_at_ms;
        assert!(gap >= MIN_GAP_MS, "gap of {gap} ms: {rounds:?}");
    }
    for r in &rounds {
        assert_eq!(
            r.closes_at_ms - r.opens_at_ms,
            if r == &rounds[0] { 60_000 } else { 10_000 }
        );
    }

    // One publish per opening, and one log line per round the daemon opened.
    let notes = stack.receive(&subscriber, rounds.len()).await;
    assert_eq!(notes.len(), rounds.len());
    let log = log.all().await;
    for r in &rounds[1..] {
        let line = log
            .lines()
            .find(|l| l.contains("round opened") && l.contains(&r.round_id))
            .unwrap_or_else(|| panic!("no log line for {}:\n{log}", r.round_id));
        for field in [
            "opens_at_ms",
            "closes_at_ms",
            "publish_attempts",
            "message_id",
        ] {
            assert!(line.contains(field), "{field} missing from {line}");
        }
    }
    assert_eq!(
        log.matches("round opened").count(),
        rounds.len() - 1,
        "{log}"
    );
    stack.cleanup(&[&subscriber]).await;
}

/// Settings for an emulator that does not exist (nothing listens on port 1).
fn unreachable_handler(state_dir: &Path) -> Command {
    let mut cmd = handler();
    cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env(
            "BUTTONPARTY_TIMESTAMP_QUEUE_URL",
            "http://127.0.0.1:1/000000000000/nowhere",
        )
        .env(
            "BUTTONPARTY_TOPIC_ARN",
            "arn:aws:sns:us-east-1:000000000000:nowhere",
        )
        .env("BUTTONPARTY_STATE_DIR", state_dir);
    cmd
}

#[tokio::test]
async fn run_waits_for_an_unreachable_queue_without_crashing_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut notify = NotifySocket::bind(&dir.path().join("notify.sock"));
    let mut child = unreachable_handler(&dir.path().join("state"))
        .arg("run")
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    let log = Stderr::collect(&mut child);

    assert!(!notify.wait_for("READY=1", Duration::from_secs(3)).await);
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited:\n{}",
        log.now()
    );
    assert!(
        notify
            .seen
            .iter()
            .any(|s| s.starts_with("STATUS=waiting for the timestamp queue")),
        "{:?}",
        notify.seen
    );

    sigterm(&child);
    let status = timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exited promptly after SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(notify.wait_for("STOPPING=1", Duration::from_secs(1)).await);
    let log = log.all().await;
    assert!(log.contains("timestamp queue does not answer"), "{log}");
    assert!(log.contains("WARN"), "{log}");
}

#[tokio::test]
async fn a_missing_setting_is_one_line_naming_it_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    for (sub, missing) in [
        ("run", "BUTTONPARTY_TOPIC_ARN"),
        ("open-round", "BUTTONPARTY_TOPIC_ARN"),
        ("run", "BUTTONPARTY_TIMESTAMP_QUEUE_URL"),
        ("open-round", "BUTTONPARTY_TIMESTAMP_QUEUE_URL"),
    ] {
        let out = unreachable_handler(dir.path())
            .arg(sub)
            .env_remove(missing)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{sub} without {missing}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(missing), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    // An invalid value names its variable too.
    let out = unreachable_handler(dir.path())
        .args(["run", "--round-chance-per-sec", "2"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("BUTTONPARTY_ROUND_CHANCE_PER_SEC"),
        "{stderr}"
    );
}
