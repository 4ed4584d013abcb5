//! The benchmark's own resources, so that a run never touches the dev stack's: queues (with
//! dead-letter queues, as the dev stack makes them), an SNS topic and platform application,
//! databases created and migrated on the dev stack's MariaDB, a state directory for
//! `open-round`. Everything is named `bench-<pid>-<random>…` and removed at the end.
//!
//! Also the database set-up of the parts: players inserted straight into `users` with multi-row
//! inserts, a round in `rounds`, and the server's `Questions` counter.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context as _, bail};
use aws_sdk_sqs::types::QueueAttributeName as A;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, MySql, QueryBuilder, Row as _};

/// Rows per multi-row `INSERT` when setting up players.
const INSERT_ROWS: usize = 1000;

/// A database created for the run.
#[derive(Debug, Clone)]
pub struct BenchDb {
    /// Its name.
    pub name: String,
    /// URL (the admin user's).
    pub url: String,
    /// A small pool on it.
    pub pool: MySqlPool,
}

/// The per-run queues the handler reads.
#[derive(Debug, Clone)]
pub struct HandlerQueues {
    /// add-user.
    pub add_user: String,
    /// press.
    pub press: String,
    /// powerup.
    pub powerup: String,
    /// timestamp.
    pub timestamp: String,
}

/// What the run created, removed by [`Resources::cleanup`].
#[derive(Debug)]
pub struct Resources {
    /// `bench-<pid>-<hex>`.
    pub run_id: String,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// SNS.
    pub sns: aws_sdk_sns::Client,
    /// `mysql://root@host:port` (no database).
    pub admin_url: String,
    queues: Mutex<Vec<String>>,
    databases: Mutex<Vec<String>>,
    sns_arns: Mutex<Vec<(bool, String)>>,
    state_dir: Mutex<Option<PathBuf>>,
}

impl Resources {
    /// A new run with these clients, on the MariaDB server at `admin_url`.
    pub fn new(sqs: aws_sdk_sqs::Client, sns: aws_sdk_sns::Client, admin_url: &str) -> Self {
        let run_id = format!("bench-{}-{:08x}", std::process::id(), rand::random::<u32>());
        Self {
            run_id,
            sqs,
            sns,
            admin_url: admin_url.trim_end_matches('/').to_owned(),
            queues: Mutex::default(),
            databases: Mutex::default(),
            sns_arns: Mutex::default(),
            state_dir: Mutex::default(),
        }
    }

    /// Creates `<run>-<suffix>` and its `-dlq` (visibility 30 s, redrive after 5 receives, 8 KiB
    /// messages: the dev stack's settings). Returns the queue's URL.
    pub async fn queue(&self, suffix: &str) -> anyhow::Result<String> {
        let name = format!("{}-{suffix}", self.run_id);
        let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("creating queue {name}: {e}");
        let dlq_url = self
            .sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .map_err(|e| err(&buttonparty::aws::error_text(&e)))?
            .queue_url
            .context("no dead-letter queue URL")?;
        self.queues.lock().expect("lock").push(dlq_url.clone());
        let dlq_arn = self
            .sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(A::QueueArn)
            .send()
            .await
            .map_err(|e| err(&buttonparty::aws::error_text(&e)))?
            .attributes
            .and_then(|mut a| a.remove(&A::QueueArn))
            .context("no dead-letter queue ARN")?;
        let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5" })
            .to_string();
        let url = self
            .sqs
            .create_queue()
            .queue_name(&name)
            .attributes(A::VisibilityTimeout, "30")
            .attributes(A::MaximumMessageSize, "8192")
            .attributes(A::RedrivePolicy, redrive)
            .send()
            .await
            .map_err(|e| err(&buttonparty::aws::error_text(&e)))?
            .queue_url
            .context("no queue URL")?;
        self.queues.lock().expect("lock").push(url.clone());
        Ok(url)
    }

    /// The handler's four queues.
    pub async fn handler_queues(&self) -> anyhow::Result<HandlerQueues> {
        self.handler_queues_for("").await
    }

    /// Another set of the handler's four queues, named after `part`.
    pub async fn handler_queues_for(&self, part: &str) -> anyhow::Result<HandlerQueues> {
        let name = |q: &str| {
            if part.is_empty() {
                q.to_owned()
            } else {
                format!("{part}-{q}")
            }
        };
        Ok(HandlerQueues {
            add_user: self.queue(&name("add-user")).await?,
            press: self.queue(&name("press")).await?,
            powerup: self.queue(&name("powerup")).await?,
            timestamp: self.queue(&name("timestamp")).await?,
        })
    }

    /// A topic and a GCM platform application: (topic ARN, application ARN).
    pub async fn topic_and_app(&self) -> anyhow::Result<(String, String)> {
        let topic = self
            .sns
            .create_topic()
            .name(&self.run_id)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("creating the topic: {}", buttonparty::aws::error_text(&e))
            })?
            .topic_arn
            .context("no topic ARN")?;
        self.sns_arns
            .lock()
            .expect("lock")
            .push((true, topic.clone()));
        let app = self
            .sns
            .create_platform_application()
            .name(&self.run_id)
            .platform("GCM")
            .attributes("PlatformCredential", "bench-fcm-credential")
            .attributes("PlatformPrincipal", "bench-fcm-principal")
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "creating the platform application: {}",
                    buttonparty::aws::error_text(&e)
                )
            })?
            .platform_application_arn
            .context("no platform application ARN")?;
        self.sns_arns
            .lock()
            .expect("lock")
            .push((false, app.clone()));
        Ok((topic, app))
    }

    /// A fresh directory for the outgoing handler's schedule state.
    pub fn state_dir(&self) -> anyhow::Result<PathBuf> {
        let dir = std::env::temp_dir().join(&self.run_id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        *self.state_dir.lock().expect("lock") = Some(dir.clone());
        Ok(dir)
    }

    /// Creates the database `<run>_<suffix>` (dashes as underscores) and applies the
    /// migrations.
    pub async fn database(&self, suffix: &str) -> anyhow::Result<BenchDb> {
        let name = format!("{}_{suffix}", self.run_id).replace('-', "_");
        let mut admin = sqlx::MySqlConnection::connect(&self.admin_url)
            .await
            .with_context(|| format!("connecting to {}", redact(&self.admin_url)))?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        self.databases.lock().expect("lock").push(name.clone());
        let _ = admin.close().await;
        let url = format!("{}/{name}", self.admin_url);
        let pool = MySqlPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .with_context(|| format!("connecting to database {name}"))?;
        buttonparty::db::MIGRATOR
            .run(&pool)
            .await
            .with_context(|| format!("migrating database {name}"))?;
        Ok(BenchDb { name, url, pool })
    }

    /// Drops one database of the run now (frees the server's memory for the next part).
    pub async fn drop_database(&self, db: BenchDb) {
        db.pool.close().await;
        if let Ok(mut admin) = sqlx::MySqlConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS `{}`",
                db.name
            )))
            .execute(&mut admin)
            .await;
            let _ = admin.close().await;
        }
        self.databases
            .lock()
            .expect("lock")
            .retain(|n| n != &db.name);
    }

    /// Removes everything the run created (best effort; says what it could not remove).
    pub async fn cleanup(&self) {
        let queues = std::mem::take(&mut *self.queues.lock().expect("lock"));
        for url in queues {
            if let Err(e) = self.sqs.delete_queue().queue_url(&url).send().await {
                eprintln!(
                    "bench: could not delete queue {url}: {}",
                    buttonparty::aws::error_text(&e)
                );
            }
        }
        let arns = std::mem::take(&mut *self.sns_arns.lock().expect("lock"));
        for (is_topic, arn) in arns {
            let r = if is_topic {
                self.sns
                    .delete_topic()
                    .topic_arn(&arn)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| buttonparty::aws::error_text(&e))
            } else {
                self.sns
                    .delete_platform_application()
                    .platform_application_arn(&arn)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| buttonparty::aws::error_text(&e))
            };
            if let Err(e) = r {
                eprintln!("bench: could not delete {arn}: {e}");
            }
        }
        let databases = std::mem::take(&mut *self.databases.lock().expect("lock"));
        if !databases.is_empty() {
            // The server may be restarting (another developer's fault suite): try for a while.
            let mut admin = sqlx::MySqlConnection::connect(&self.admin_url).await;
            for _ in 0..30 {
                if admin.is_ok() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                admin = sqlx::MySqlConnection::connect(&self.admin_url).await;
            }
            match admin {
                Ok(mut admin) => {
                    for name in databases {
                        if let Err(e) =
                            sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                                .execute(&mut admin)
                                .await
                        {
                            eprintln!("bench: could not drop database {name}: {e}");
                        }
                    }
                    let _ = admin.close().await;
                }
                Err(e) => eprintln!("bench: could not drop databases {databases:?}: {e}"),
            }
        }
        if let Some(dir) = self.state_dir.lock().expect("lock").take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A URL with its password hidden.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &cred[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The benchmark's players: `bench-0000001`, `bench-0000002`, …
pub fn player_name(index: u64) -> String {
    format!("bench-{:07}", index + 1)
}

/// A fixed pseudo-random 64-bit value of `i` (splitmix64).
pub fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A player's stored state for the round-opening and read parts: a skewed score
/// (`⌊u³ × 1,000,000⌋` for a uniform `u`: many low scores and ties, few high ones) and, for those
/// with points, a streak as of the `history` round.
pub fn ranked_player(index: u64, history_opens_at: i64) -> (i64, u32, Option<i64>) {
    let u = (mix(index) >> 11) as f64 / (1u64 << 53) as f64;
    let score = (u * u * u * 1_000_000.0) as i64;
    if score == 0 {
        (0, 0, None)
    } else {
        (
            score,
            1 + (mix(index ^ 0x5555) % 15) as u32,
            Some(history_opens_at),
        )
    }
}

/// Inserts players `0..count` into `users` with multi-row inserts; `state(i)` gives
/// (score, streak, last_scored_opens_at_ms). Calls `progress(done)` after each statement.
pub async fn insert_players(
    pool: &MySqlPool,
    count: u64,
    state: impl Fn(u64) -> (i64, u32, Option<i64>),
    progress: impl Fn(u64),
) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let mut start = 0;
    while start < count {
        let end = (start + INSERT_ROWS as u64).min(count);
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO users (username, score, streak, last_scored_opens_at_ms, created_at_ms) ",
        );
        q.push_values(start..end, |mut b, i| {
            let (score, streak, last) = state(i);
            b.push_bind(player_name(i).into_bytes())
                .push_bind(score)
                .push_bind(streak)
                .push_bind(last)
                .push_bind(0_i64);
        });
        q.build()
            .execute(&mut *conn)
            .await
            .context("inserting players")?;
        progress(end);
        start = end;
    }
    Ok(())
}

/// Records a round straight into `rounds`.
pub async fn insert_round(
    pool: &MySqlPool,
    round_id: &str,
    opens_at_ms: i64,
    closes_at_ms: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO rounds (round_id, opens_at_ms, closes_at_ms, recorded_at_ms) VALUES (?, ?, ?, ?)",
    )
    .bind(round_id.as_bytes())
    .bind(opens_at_ms)
    .bind(closes_at_ms)
    .bind(opens_at_ms)
    .execute(pool)
    .await
    .context("inserting a round")?;
    Ok(())
}

/// The server's `Questions` counter: statements clients sent (not those run inside triggers or
/// stored programs; not prepares, closes or pings).
pub async fn questions(conn: &mut sqlx::MySqlConnection) -> anyhow::Result<u64> {
    let row = sqlx::query(
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'QUESTIONS'",
    )
    .fetch_one(&mut *conn)
    .await
    .context("reading the Questions status variable")?;
    let v: String = row.try_get(0)?;
    v.trim()
        .parse()
        .with_context(|| format!("Questions is not a number: {v}"))
}

/// Waits (up to `patience`) until InnoDB has written back most of the pages a bulk set-up
/// dirtied — at most 5% of the buffer pool dirty, or no progress for 10 s — so that a timed part
/// does not share the disk and a core with the server's background flushing. Returns the
/// seconds waited.
pub async fn wait_flushed(pool: &MySqlPool, patience: std::time::Duration) -> anyhow::Result<f64> {
    let started = std::time::Instant::now();
    let mut best = (u64::MAX, started);
    loop {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME IN ('INNODB_BUFFER_POOL_PAGES_DIRTY', 'INNODB_BUFFER_POOL_PAGES_TOTAL')",
        )
        .fetch_all(pool)
        .await
        .context("reading the InnoDB buffer pool status")?;
        let get = |name: &str| {
            rows.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (dirty, total) = (
            get("INNODB_BUFFER_POOL_PAGES_DIRTY"),
            get("INNODB_BUFFER_POOL_PAGES_TOTAL"),
        );
        let now = std::time::Instant::now();
        if dirty < best.0 {
            best = (dirty, now);
        }
        if dirty * 20 <= total
            || now.duration_since(best.1) >= std::time::Duration::from_secs(10)
            || now.duration_since(started) >= patience
        {
            return Ok(now.duration_since(started).as_secs_f64());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// How many `Questions` one [`questions`] call itself adds (the least of a few back-to-back
/// pairs, so that other clients' statements are left out).
pub async fn questions_overhead(conn: &mut sqlx::MySqlConnection) -> anyhow::Result<u64> {
    let mut best = u64::MAX;
    for _ in 0..5 {
        let a = questions(conn).await?;
        let b = questions(conn).await?;
        best = best.min(b.saturating_sub(a));
    }
    if best == u64::MAX {
        bail!("could not read Questions");
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_scores_are_skewed() {
        assert_eq!(player_name(0), "bench-0000001");
        assert!(player_name(9) < player_name(10));
        let scores: Vec<i64> = (0..10_000).map(|i| ranked_player(i, 5).0).collect();
        assert!(scores.iter().all(|s| (0..1_000_000).contains(s)));
        let low = scores.iter().filter(|s| **s < 1000).count();
        let high = scores.iter().filter(|s| **s >= 500_000).count();
        assert!(low > 500 && low < 1500, "{low}");
        assert!(high > 1000 && high < 3000, "{high}");
        assert_eq!(ranked_player(1, 5), ranked_player(1, 5));
        let (s, streak, last) = ranked_player(3, 77);
        assert_eq!(last.is_some(), s > 0);
        assert_eq!(streak > 0, s > 0);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("mysql://u:secret@h:3306/db"),
            "mysql://u:***@h:3306/db"
        );
        assert_eq!(redact("mysql://root@h:3306"), "mysql://root@h:3306");
    }
}
