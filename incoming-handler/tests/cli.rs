//! The `incoming-handler` binary: settings errors, `migrate` with the Secrets Manager secret, and
//! the systemd contract (READY=1, STOPPING=1, exit 0 after SIGTERM).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use sqlx::{AssertSqlSafe, Connection, Row};
use tokio::io::AsyncReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_incoming-handler");

fn bare() -> std::process::Command {
    let mut cmd = std::process::Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    cmd
}

#[test]
fn a_missing_setting_prints_one_line_naming_it_and_exits_2() {
    let out = bare()
        .args(["run"])
        .env("BUTTONPARTY_DATABASE_URL", "mysql://u@127.0.0.1/x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("BUTTONPARTY_ADD_USER_QUEUE_URL"),
        "{stderr}"
    );
}

#[test]
fn an_invalid_setting_prints_one_line_naming_it_and_exits_2() {
    let out = bare()
        .args(["run"])
        .env("BUTTONPARTY_BATCH_SIZE", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("BUTTONPARTY_BATCH_SIZE"), "{stderr}");
}

#[test]
fn a_drain_that_does_not_end_before_the_stop_timeout_is_refused() {
    let all = [
        ("BUTTONPARTY_DATABASE_URL", "mysql://u@127.0.0.1/x"),
        ("BUTTONPARTY_ADD_USER_QUEUE_URL", "http://127.0.0.1:1/q/a"),
        ("BUTTONPARTY_PRESS_QUEUE_URL", "http://127.0.0.1:1/q/p"),
        ("BUTTONPARTY_POWERUP_QUEUE_URL", "http://127.0.0.1:1/q/u"),
        ("BUTTONPARTY_TIMESTAMP_QUEUE_URL", "http://127.0.0.1:1/q/t"),
        (
            "BUTTONPARTY_TOPIC_ARN",
            "arn:aws:sns:us-east-1:000000000000:t",
        ),
        (
            "BUTTONPARTY_PLATFORM_APPLICATION_ARN",
            "arn:aws:sns:us-east-1:000000000000:app/GCM/a",
        ),
    ];
    for (drain, stop, refused) in [("40", "45", true), ("36", "45", true), ("35", "45", false)] {
        let mut cmd = bare();
        cmd.args(["run"])
            .envs(all)
            .env("BUTTONPARTY_DRAIN_SECS", drain)
            .env("BUTTONPARTY_STOP_TIMEOUT_SECS", stop)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        if status.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if refused {
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(2),
                "{drain}/{stop}: {stderr}"
            );
            assert!(
                stderr.contains("BUTTONPARTY_DRAIN_SECS")
                    && stderr.contains("BUTTONPARTY_STOP_TIMEOUT_SECS"),
                "{stderr}"
            );
        } else {
            // Accepted: it goes on to contact the (unreachable) services and keeps retrying.
            assert!(status.is_none(), "{drain}/{stop} exited: {stderr}");
        }
    }
}

#[test]
fn a_missing_database_setting_names_the_secret_variable() {
    let out = bare().args(["migrate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BUTTONPARTY_DB_SECRET_ID"));
}

#[test]
fn help_lists_the_subcommands() {
    let out = bare().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("run") && help.contains("migrate"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_the_schema_using_the_secret_stored_in_the_emulator() {
    let admin_url = buttonparty::testing::env("BUTTONPARTY_TEST_DATABASE_URL");
    let admin_url = admin_url.trim_end_matches('/');
    let name = buttonparty::testing::unique("bp_mig").replace('-', "_");
    let user = format!("u{}", &name[name.len() - 8..]);
    let password = format!("sentinel-pw-{}", rand::random::<u32>());
    let mut admin = sqlx::MySqlConnection::connect(admin_url).await.unwrap();
    for sql in [
        format!("CREATE DATABASE `{name}`"),
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"),
        format!("CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'"),
        format!("GRANT ALL ON `{name}`.* TO '{user}'@'%'"),
        format!("GRANT ALL ON `{name}`.* TO '{user}'@'localhost'"),
    ] {
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let aws = buttonparty::testing::aws_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let secret_id = format!("test/{name}");
    secrets
        .create_secret()
        .name(&secret_id)
        .secret_string(
            serde_json::json!({
                "engine": "mysql", "username": user, "password": password,
                "host": "127.0.0.1", "port": 3306, "dbname": name,
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();

    let out = tokio::process::Command::new(BIN)
        .arg("migrate")
        .env_remove("BUTTONPARTY_DATABASE_URL")
        .env("BUTTONPARTY_DB_SECRET_ID", &secret_id)
        .env("BUTTONPARTY_LOG", "debug")
        .env("BUTTONPARTY_LOG_FORMAT", "text")
        .output()
        .await
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(
        !all.contains(&password),
        "the password never reaches the output"
    );
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1",
    )
    .bind(&name)
    .fetch_all(&mut admin)
    .await
    .unwrap()
    .iter()
    .map(|r| String::from_utf8_lossy(&r.get::<Vec<u8>, _>(0)).into_owned())
    .collect();
    for t in ["users", "rounds", "scores", "powerups", "push_endpoints"] {
        assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
    }
    for sql in [
        format!("DROP DATABASE `{name}`"),
        format!("DROP USER '{user}'@'%'"),
        format!("DROP USER '{user}'@'localhost'"),
    ] {
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let _ = secrets
        .delete_secret()
        .secret_id(&secret_id)
        .force_delete_without_recovery(true)
        .send()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_in_flight_work_and_exits_0_with_systemd_notifications() {
    let s = Stack::new().await;
    let users: Vec<String> = (0..200).map(|i| format!("term-{i:03}")).collect();
    s.seed_users(&users).await;
    s.open_round("r", Duration::from_secs(1), Duration::from_secs(600))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    let mut child = s.spawn_process(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut buf = vec![0u8; 4096];
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !seen.contains("READY=1") {
            let n = sock.recv(&mut buf).await.unwrap();
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
    })
    .await
    .expect("READY=1 within 60 s");
    s.send_all(
        &s.press,
        &users.iter().map(|u| press(u)).collect::<Vec<_>>(),
    )
    .await;
    wait_for("work in flight", Duration::from_secs(30), || async {
        s.count("SELECT COUNT(*) FROM scores").await > 0
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within the stop timeout")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await
    {
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("STOPPING=1"), "notifications: {seen}");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).await.unwrap();
    }
    assert!(stderr.contains("incoming handler stopped"), "{stderr}");
    // Whatever was not applied before the exit is applied once by the next handler.
    let h = s.spawn_handler().await;
    wait_for("all scored", Duration::from_secs(90), || async {
        s.count("SELECT COUNT(*) FROM scores").await == 200
    })
    .await;
    let total: i64 = sqlx::query("SELECT CAST(SUM(score) AS SIGNED) FROM users")
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 200, "nothing applied twice");
    h.stop().await;
    s.cleanup().await;
}
