//! The benchmark's disorder and registration rows (issues 11 and 13):
//!
//! - c2. restart with a backlog: the handler starts while 10,000 presses (5,000 players, each
//!   twice) wait behind their round's timestamp message, as after a restart or deploy mid-round;
//! - c3. the burst with 10 % of its presses out of order: two rounds, the second round's
//!   timestamp message delivered after 5 % of its presses, and 5 % of the first round's presses
//!   delivered only after their players' second press was applied;
//! - r. a burst of registrations through the handler, against a bare client making the same
//!   SQS and SNS calls at the same concurrency.
//!
//! Each returns what it measured; [`crate::bench`] runs them after c and puts them in the table.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use futures::StreamExt as _;
use serde::Serialize;

use crate::bench_env::{BenchDb, HandlerQueues, insert_players, insert_round, player_name};
use crate::bench_parts::{HANDLER_READY, NOT_INHERITED};
use crate::bench_proc::Child;
use crate::players::press_body;
use crate::progress::{Progress, ProgressMode};
use crate::send::{SendOptions, now_ms, send_bodies};

/// A run of the handler over a disordered backlog.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct DisorderRun {
    /// Presses in the queue.
    pub presses: u64,
    /// From the process start until every press was judged and every re-fold done, seconds.
    pub secs: f64,
    /// Presses per second.
    pub per_sec: f64,
    /// CPU seconds of the handler meanwhile.
    pub cpu_secs: f64,
    /// Peak resident set, bytes.
    pub peak_rss_bytes: u64,
    /// Players re-folded (from the handler's stats lines).
    pub refolded: Option<u64>,
    /// Visibility heartbeats sent.
    pub heartbeats: Option<u64>,
    /// Redeliveries the handler saw.
    pub redelivered: Option<u64>,
}

/// A burst of registrations, through the handler and through a bare client.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RegistrationRun {
    /// Registrations in the burst.
    pub registrations: u64,
    /// Through the handler: registrations per second (until every endpoint is subscribed).
    pub handler_per_sec: f64,
    /// The bare client: the same receive, SNS and delete calls at the same concurrency.
    pub bare_per_sec: f64,
    /// Receivers (both) and SNS calls in flight per receiver (both).
    pub receivers: u32,
    /// SNS registrations in flight per receiver.
    pub concurrency: u32,
}

/// Sends `bodies` to `url` and waits until the queue shows them.
async fn enqueue(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    bodies: Vec<String>,
    label: &str,
    mode: ProgressMode,
) -> anyhow::Result<()> {
    let n = bodies.len() as u64;
    let progress = Progress::new(label, n, mode);
    let stats = send_bodies(sqs, url, bodies, SendOptions::default(), &progress).await;
    progress.finish(format!("{:.0} msg/s", stats.per_sec()));
    if stats.failed > 0 {
        bail!("{label}: {} messages could not be enqueued", stats.failed);
    }
    Ok(())
}

/// Starts the handler and waits until `done` says the work is finished; returns the run.
async fn run_handler<F, Fut>(
    handler: &Path,
    env: &[(String, String)],
    presses: u64,
    label: &str,
    mode: ProgressMode,
    mut done: F,
) -> anyhow::Result<DisorderRun>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(bool, u64)>>,
{
    let progress = Progress::new(label, presses, mode);
    let started = Instant::now();
    let mut child = Child::spawn(
        "incoming-handler",
        handler,
        &["run"],
        env,
        NOT_INHERITED,
        Some(HANDLER_READY),
    )?;
    let limit = Duration::from_secs(120 + presses / 50);
    let (secs, usage) = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        child.check_running()?;
        let (finished, judged) = done().await?;
        progress.inc(judged.min(presses).saturating_sub(progress.position()));
        if finished {
            break (started.elapsed().as_secs_f64(), child.usage()?);
        }
        if started.elapsed() > limit {
            bail!(
                "{label}: not finished after {} s; the handler's last log lines:\n{}",
                limit.as_secs(),
                child.tail()
            );
        }
    };
    progress.finish(format!("{:.0} presses/s", presses as f64 / secs));
    let status = child.terminate(Duration::from_secs(60)).await?;
    if !status.success() {
        bail!("{label}: the handler exited with {status}");
    }
    Ok(DisorderRun {
        presses,
        secs,
        per_sec: presses as f64 / secs,
        cpu_secs: usage.cpu_secs,
        peak_rss_bytes: usage.peak_rss_bytes,
        refolded: child.stat_total("refolded"),
        heartbeats: child.stat_total("heartbeats"),
        redelivered: child.stat_total("redelivered"),
    })
}

/// (every event judged, no player left to re-fold, queue empty): the handler is done with a
/// backlog; and how many presses are judged.
async fn settled(
    sqs: &aws_sdk_sqs::Client,
    db: &BenchDb,
    press_url: &str,
    scored_target: i64,
) -> anyhow::Result<(bool, u64)> {
    let (scored, judged, marked): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM player_events WHERE outcome = 'scored'), \
                (SELECT COUNT(*) FROM player_events WHERE outcome IS NOT NULL), \
                (SELECT COUNT(*) FROM users WHERE refold_from_ms IS NOT NULL)",
    )
    .fetch_one(&db.pool)
    .await?;
    if scored < scored_target || marked > 0 {
        return Ok((false, judged as u64));
    }
    let d = crate::queues::depth(sqs, press_url).await?;
    Ok((d.visible + d.in_flight == 0, judged as u64))
}

/// c2. The handler starts while `2 × players` presses (each player twice, in one round) wait in
/// the press queue behind the round's timestamp message.
pub async fn restart_with_backlog(
    sqs: &aws_sdk_sqs::Client,
    handler: &Path,
    env: &[(String, String)],
    queues: &HandlerQueues,
    db: &BenchDb,
    players: u64,
    mode: ProgressMode,
) -> anyhow::Result<DisorderRun> {
    insert_players(&db.pool, players, |_| (0, 0, None), |_| {}).await?;
    let opens = now_ms() - 1_000;
    let round = format!(
        r#"{{"round_id":"{opens}-restart","opens_at_ms":{opens},"closes_at_ms":{},"window_ms":600000}}"#,
        opens + 600_000
    );
    enqueue(sqs, &queues.timestamp, vec![round], "c2. round", mode).await?;
    let mut bodies: Vec<String> = (0..players).map(|i| press_body(&player_name(i))).collect();
    bodies.extend((0..players).map(|i| press_body(&player_name(i))));
    enqueue(sqs, &queues.press, bodies, "c2. enqueue", mode).await?;
    let presses = 2 * players;
    run_handler(handler, env, presses, "c2. restart", mode, || async {
        let (finished, _) = settled(sqs, db, &queues.press, players as i64).await?;
        let d = crate::queues::depth(sqs, &queues.press).await?;
        let taken = presses.saturating_sub(d.visible + d.in_flight);
        Ok((finished, taken))
    })
    .await
}

/// Sends `bodies` so that they become visible at `visible_at` (epoch ms): each batch with the
/// `DelaySeconds` left until then, so their `SentTimestamp` is the send and their delivery late.
async fn enqueue_visible_at(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    bodies: Vec<String>,
    visible_at: i64,
) -> anyhow::Result<()> {
    let chunks: Vec<Vec<String>> = bodies.chunks(10).map(<[String]>::to_vec).collect();
    let results: Vec<u64> = futures::stream::iter(chunks)
        .map(|chunk| async move {
            let delay = ((visible_at - now_ms()).max(0) as f64 / 1000.0).ceil() as i32;
            let entries: Vec<(String, i32)> =
                chunk.into_iter().map(|b| (b, delay.min(900))).collect();
            let (outcomes, _) = crate::send::send_batch_delayed(sqs, url, &entries, 4).await;
            outcomes.iter().filter(|o| !o.ok).count() as u64
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let failed: u64 = results.iter().sum();
    if failed > 0 {
        bail!("c3: {failed} messages could not be enqueued");
    }
    Ok(())
}

/// c3. `n` presses (every player twice, one press in each of two rounds), 10 % of them
/// delivered out of order, at moments set with `DelaySeconds` from the handler's start (its
/// in-order rate `rate`, from c, sets them):
/// - 5 % of the players press in the second round before its timestamp message arrives (the
///   message is delivered only once the handler has had time to take every press visible at
///   its start): their presses are judged without their round, and judged again when it comes;
/// - 5 % of the first round's presses are delivered once their players' second-round presses
///   (the first of the second round's other presses) are about applied, each behind its
///   player's second-round press, while the rest of the second round is still coming in.
///
/// The other presses of the second round become visible 200 ms after its message. (The late
/// presses used to wait until every other press was applied: the run then ended on that
/// schedule — `DelaySeconds` is whole seconds — rather than on the handler, and the figure fell
/// as the handler got faster.)
#[allow(clippy::too_many_arguments)]
pub async fn out_of_order(
    sqs: &aws_sdk_sqs::Client,
    handler: &Path,
    env: &[(String, String)],
    queues: &HandlerQueues,
    db: &BenchDb,
    n: u64,
    rate: f64,
    mode: ProgressMode,
) -> anyhow::Result<DisorderRun> {
    let players = n / 2;
    let part = n / 20;
    insert_players(&db.pool, players, |_| (0, 0, None), |_| {}).await?;
    let rate = rate.max(100.0);
    // The handler starts once everything is enqueued (about `n` messages at ~1,500/s).
    let start = now_ms() + (n as f64 / 1_500.0 * 1_000.0) as i64 + 3_000;
    // The round's message when the presses visible at the start are about taken, the rest of
    // its presses right after, the late first-round presses once their players' second-round
    // presses (first in that rest) are about applied.
    let round_at = start + ((players as f64 / rate) * 950.0) as i64;
    let rest_at = round_at + 200;
    let end = rest_at + ((part as f64 / rate) * 1_000.0) as i64 + 1_000;
    let r1 = now_ms() - 1_000;
    let press = |i: u64| press_body(&player_name(i));
    // First round: players `part..2·part` are delivered last; the others at once.
    enqueue(
        sqs,
        &queues.press,
        (2 * part..players).map(press).collect(),
        "c3. first round",
        mode,
    )
    .await?;
    enqueue(
        sqs,
        &queues.press,
        (0..part).map(press).collect(),
        "c3. first round",
        mode,
    )
    .await?;
    enqueue_visible_at(
        sqs,
        &queues.press,
        (part..2 * part).map(press).collect(),
        end,
    )
    .await?;
    // The first round closes here; the second opens 1 ms later.
    let boundary = now_ms() + 50;
    insert_round(&db.pool, &format!("{r1}-first"), r1, boundary).await?;
    tokio::time::sleep(Duration::from_millis(60)).await;
    let r2 = boundary + 1;
    // Second round: players `0..part` press before its message arrives.
    enqueue(
        sqs,
        &queues.press,
        (0..part).map(press).collect(),
        "c3. second round",
        mode,
    )
    .await?;
    let round2 = format!(
        r#"{{"round_id":"{r2}-second","opens_at_ms":{r2},"closes_at_ms":{},"window_ms":600000}}"#,
        r2 + 600_000
    );
    enqueue_visible_at(sqs, &queues.timestamp, vec![round2], round_at).await?;
    enqueue_visible_at(
        sqs,
        &queues.press,
        (part..players).map(press).collect(),
        rest_at,
    )
    .await?;
    let wait = start - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    eprintln!(
        "bench: c3: {part} second-round presses before their round (its message {:.1} s after the start), {part} first-round presses {:.1} s after the start{}",
        (round_at - start) as f64 / 1000.0,
        (end - start) as f64 / 1000.0,
        if wait < 0 {
            format!(" (enqueueing ran {} ms late)", -wait)
        } else {
            String::new()
        }
    );
    run_handler(handler, env, n, "c3. out of order", mode, || async {
        let (finished, _) = settled(sqs, db, &queues.press, n as i64).await?;
        let d = crate::queues::depth(sqs, &queues.press).await?;
        Ok((finished, n.saturating_sub(d.total())))
    })
    .await
}

/// `n` add-user bodies of new players with tokens of their own (`label` keeps the handler's and
/// the bare client's tokens apart: SNS returns the existing endpoint for a known token).
fn registration_bodies(n: u64, label: &str) -> Vec<String> {
    let run = now_ms();
    (0..n)
        .map(|i| {
            serde_json::json!({"username": player_name(i), "token": format!("bench-{label}-token-{i}-{run}")})
                .to_string()
        })
        .collect()
}

/// r. `n` registrations (new players, distinct tokens) through the handler, until every
/// endpoint is subscribed; returns registrations per second.
pub async fn registrations_through_handler(
    sqs: &aws_sdk_sqs::Client,
    handler: &Path,
    env: &[(String, String)],
    queues: &HandlerQueues,
    db: &BenchDb,
    n: u64,
    mode: ProgressMode,
) -> anyhow::Result<f64> {
    let bodies = registration_bodies(n, "handler");
    enqueue(sqs, &queues.add_user, bodies, "r. enqueue", mode).await?;
    let run = run_handler(handler, env, n, "r. registrations", mode, || async {
        let done: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM push_endpoints WHERE subscription_arn IS NOT NULL",
        )
        .fetch_one(&db.pool)
        .await?;
        let d = crate::queues::depth(sqs, &queues.add_user).await?;
        Ok((
            done as u64 >= n && d.visible + d.in_flight == 0,
            done as u64,
        ))
    })
    .await?;
    Ok(run.per_sec)
}

/// r, bare: `receivers` tasks, each receiving 10 add-user messages and, for up to
/// `concurrency` of them at once, making the SNS calls the handler makes for a new player
/// (CreatePlatformEndpoint, GetEndpointAttributes, Subscribe), then deleting them with one
/// `DeleteMessageBatch`; until `n` are done. Returns registrations per second.
#[allow(clippy::too_many_arguments)]
pub async fn registrations_bare(
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
    url: &str,
    topic_arn: &str,
    app_arn: &str,
    n: u64,
    receivers: u32,
    concurrency: u32,
    mode: ProgressMode,
) -> anyhow::Result<f64> {
    let bodies = registration_bodies(n, "bare");
    enqueue(sqs, url, bodies, "r. bare enqueue", mode).await?;
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::new("r. bare client", n, mode);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..receivers {
        let (sqs, sns, url, topic, app, done, progress) = (
            sqs.clone(),
            sns.clone(),
            url.to_owned(),
            topic_arn.to_owned(),
            app_arn.to_owned(),
            done.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            while done.load(Ordering::Relaxed) < n {
                let Ok(out) = sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(2)
                    .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                    .send()
                    .await
                else {
                    continue;
                };
                let msgs = out.messages.unwrap_or_default();
                if msgs.is_empty() {
                    continue;
                }
                futures::stream::iter(msgs.iter())
                    .for_each_concurrent(concurrency.max(1) as usize, |m| {
                        let (sns, topic, app) = (&sns, &topic, &app);
                        async move {
                            let body: serde_json::Value =
                                serde_json::from_str(m.body().unwrap_or("{}")).unwrap_or_default();
                            let token = body["token"].as_str().unwrap_or("t").to_owned();
                            let Ok(ep) = sns
                                .create_platform_endpoint()
                                .platform_application_arn(app)
                                .token(token)
                                .send()
                                .await
                            else {
                                return;
                            };
                            let arn = ep.endpoint_arn.unwrap_or_default();
                            let _ = sns
                                .get_endpoint_attributes()
                                .endpoint_arn(&arn)
                                .send()
                                .await;
                            let _ = sns
                                .subscribe()
                                .topic_arn(topic)
                                .protocol("application")
                                .endpoint(&arn)
                                .return_subscription_arn(true)
                                .send()
                                .await;
                        }
                    })
                    .await;
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
                let count = entries.len() as u64;
                if sqs
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .is_ok()
                {
                    done.fetch_add(count, Ordering::Relaxed);
                    progress.inc(count);
                }
            }
        });
    }
    let limit = Duration::from_secs(120 + n / 10);
    let all = async { while tasks.join_next().await.is_some() {} };
    tokio::time::timeout(limit, all)
        .await
        .context("r: the bare client did not finish")?;
    let secs = started.elapsed().as_secs_f64();
    progress.finish(format!("{:.0} registrations/s", n as f64 / secs));
    Ok(n as f64 / secs)
}
