//! Smoke test of `bp-dev simulate` against the dev stack's SQS (LocalStack), on queues of its
//! own: `--register` + `--press` for 20 players, then every queued body is read back, parsed with
//! the incoming handler's parsers, and counted against the run's report. Run with the dev-stack
//! environment (`. .dev-stack/env`, or through scripts/test).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use buttonparty::messages::{parse_add_user, parse_powerup, parse_press};
use buttonparty::testing::{TestQueue, aws_config, unique};
use buttonparty_devtools::simulate::Report;

const BP_DEV: &str = env!("CARGO_BIN_EXE_bp-dev");

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The text with each run of spaces made one space (the summary aligns its columns).
fn squeeze(text: &str) -> String {
    text.lines()
        .map(|l| {
            l.split(' ')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Every message of the queue (body, SentTimestamp), once `expected` arrived and no more comes.
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str, expected: usize) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut empty = 0;
    while tokio::time::Instant::now() < deadline && (out.len() < expected || empty < 2) {
        let resp = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .expect("receive");
        let msgs = resp.messages.unwrap_or_default();
        if msgs.is_empty() {
            empty += 1;
        } else {
            empty = 0;
        }
        for m in msgs {
            let sent = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                .and_then(|v| v.parse().ok())
                .expect("SentTimestamp");
            out.push((m.body().unwrap_or_default().to_owned(), sent));
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .expect("delete");
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn register_and_press_enqueue_what_the_report_says() {
    let sdk = aws_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let name = unique("bpdev-smoke");
    let add_user = TestQueue::new(&sqs, &format!("{name}-add-user"), 300, 5).await;
    let press = TestQueue::new(&sqs, &format!("{name}-press"), 300, 5).await;
    let powerup = TestQueue::new(&sqs, &format!("{name}-powerup"), 300, 5).await;

    let opens = now_ms();
    let round = format!(
        r#"{{"round_id":"{name}","opens_at_ms":{opens},"closes_at_ms":{}}}"#,
        opens + 3_000
    );
    let prefix = format!("{name}-p");
    let report_path = std::env::temp_dir().join(format!("{name}.json"));
    let out = tokio::process::Command::new(BP_DEV)
        .args(["--progress", "plain", "simulate", "--register", "--press"])
        .args(["--players", "20", "--prefix", &prefix, "--seed", "7"])
        .args([
            "--late",
            "0.2",
            "--twice",
            "0.25",
            "--absent",
            "0.1",
            "--powerups",
            "0.2",
        ])
        .args(["--late-by-secs", "1", "--round-json", &round])
        .args(["--add-user-queue-url", &add_user.url])
        .args(["--press-queue-url", &press.url])
        .args(["--powerup-queue-url", &powerup.url])
        .arg("--report")
        .arg(&report_path)
        .output()
        .await
        .expect("run bp-dev");
    let stdout = squeeze(&String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bp-dev failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    std::fs::remove_file(&report_path).unwrap();
    let r = report.round.as_ref().expect("round report");

    // The printed summary is the report's.
    assert!(
        stdout.contains("registered 20 add-user messages sent"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("presses sent {}\n", r.presses_sent)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("in time {} players", r.in_time.len())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "late {} players (0.3 to 1.3 s after the close)",
            r.late.len()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("twice {} players", r.twice.len())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("powerups {} purchases", r.powerups_sent)),
        "{stdout}"
    );
    // Plain progress lines on a non-terminal stderr.
    assert!(stderr.contains("register: 20/20"), "{stderr}");

    // The plan's counts for these shares: 2 absent, 4 late, 14 on time, 5 twice, 4 buyers.
    assert_eq!(
        (
            r.planned.absent_players,
            r.planned.late_players,
            r.planned.on_time_players
        ),
        (2, 4, 14)
    );
    assert_eq!((r.planned.duplicate_players, r.planned.powerups), (5, 4));
    assert_eq!(r.presses_sent, r.planned.presses);
    assert_eq!((r.presses_failed, r.powerups_failed), (0, 0));
    assert_eq!(r.in_time.len() + r.late.len() + r.at_the_close.len(), 18);
    assert_eq!(r.twice.len(), 5);
    assert_eq!(r.absent.len(), 2);

    // add-user: one per player, fake tokens.
    let adds = drain(&sqs, &add_user.url, 20).await;
    assert_eq!(adds.len(), 20);
    let mut names = BTreeSet::new();
    for (body, _) in &adds {
        let a = parse_add_user(body.as_bytes()).expect("add-user body parses");
        assert!(a.token.expose().starts_with("fake-fcm-token-"));
        names.insert(a.username.into_inner());
    }
    assert_eq!(names.len(), 20);
    assert!(names.iter().all(|n| n.starts_with(&prefix)));

    // press: judged by SentTimestamp, as the incoming handler does.
    let presses = drain(&sqs, &press.url, r.presses_sent).await;
    assert_eq!(presses.len(), r.presses_sent);
    let close = opens + 3_000;
    let mut by_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (body, sent) in &presses {
        let p = parse_press(body.as_bytes()).expect("press body parses");
        assert!(names.contains(p.username.as_str()));
        by_user
            .entry(p.username.into_inner())
            .or_default()
            .push(*sent);
    }
    let in_time: BTreeSet<&String> = by_user
        .iter()
        .filter(|(_, t)| t.iter().min().unwrap() <= &close)
        .map(|(u, _)| u)
        .collect();
    // The report's "in time" is sure (answered by the close); "at the close" may go either way.
    let sure: BTreeSet<&String> = r.in_time.iter().collect();
    let maybe: BTreeSet<&String> = r.in_time.iter().chain(&r.at_the_close).collect();
    assert!(
        sure.is_subset(&in_time) && in_time.is_subset(&maybe),
        "players whose first press SQS took by the close: {in_time:?}, report: {sure:?} + {:?}",
        r.at_the_close
    );
    for u in &r.late {
        assert!(
            by_user[u].iter().all(|&t| t > close),
            "{u} was reported late: {:?}",
            by_user[u]
        );
    }
    let twice: BTreeSet<&String> = by_user
        .iter()
        .filter(|(_, t)| t.len() == 2)
        .map(|(u, _)| u)
        .collect();
    assert_eq!(twice, r.twice.iter().collect());
    assert!(by_user.values().all(|t| t.len() <= 2));
    assert_eq!(by_user.len(), 18);

    // powerup: parseable purchases with distinct request ids.
    let buys = drain(&sqs, &powerup.url, r.powerups_sent).await;
    assert_eq!(buys.len(), r.powerups_sent);
    let ids: BTreeSet<String> = buys
        .iter()
        .map(|(body, _)| {
            let p = parse_powerup(body.as_bytes()).expect("powerup body parses");
            assert!(names.contains(p.username.as_str()));
            p.request_id.expect("a request id").as_str().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), r.powerups_sent);

    for q in [add_user, press, powerup] {
        q.delete(&sqs).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_enqueues_exactly_n_presses() {
    let sdk = aws_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let press = TestQueue::new(&sqs, &unique("bpdev-burst"), 300, 5).await;
    let out = tokio::process::Command::new(BP_DEV)
        .args([
            "--progress",
            "off",
            "simulate",
            "--burst",
            "123",
            "--players",
            "7",
        ])
        .args(["--concurrency", "4", "--press-queue-url", &press.url])
        .output()
        .await
        .expect("run bp-dev");
    let stdout = squeeze(&String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("burst 123 presses in"), "{stdout}");
    let bodies = drain(&sqs, &press.url, 123).await;
    assert_eq!(bodies.len(), 123);
    let users: BTreeSet<String> = bodies
        .iter()
        .map(|(b, _)| parse_press(b.as_bytes()).unwrap().username.into_inner())
        .collect();
    assert_eq!(users.len(), 7);
    press.delete(&sqs).await;
}

#[test]
fn a_missing_queue_is_named_before_anything_is_sent() {
    let out = std::process::Command::new(BP_DEV)
        .args(["simulate", "--register", "--players", "3"])
        .env_remove("BUTTONPARTY_ADD_USER_QUEUE_URL")
        .output()
        .expect("run bp-dev");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BUTTONPARTY_ADD_USER_QUEUE_URL"),
        "{stderr}"
    );
}
