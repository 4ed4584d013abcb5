//! The ButtonParty incoming handler: the only writer of game state.
//!
//! One receiver task per queue (several for presses) long-polls SQS and hands each receive to
//! that queue's consumer ([`rounds`], [`users`], [`powerups`], [`presses`]). Presses are gathered
//! into batches and judged and written in one transaction each ([`batch_writer`]). A message is
//! deleted only after what it caused is committed; redeliveries are recognised, so every message
//! takes effect exactly once. While the database is unavailable receiving pauses and held messages
//! are kept invisible ([`inflight`]); on SIGTERM receiving stops, in-flight work is committed and
//! deleted, and whatever could not be applied is released.

pub mod batch_writer;
pub mod batcher;
pub mod catchup;
pub mod config;
pub mod consumer;
pub mod health;
pub mod identity;
pub mod inflight;
pub mod powerups;
pub mod presses;
pub mod push;
pub mod queue;
pub mod rounds;
pub mod stats;
pub mod store;
pub mod users;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use buttonparty::backoff::Backoff;
use buttonparty::db::{Database, DbError};
use buttonparty::notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batcher::BatchLimits;
use crate::catchup::CatchUp;
use crate::config::Config;
use crate::consumer::{Receiver, Sink};
use crate::health::Health;
use crate::inflight::InFlight;
use crate::queue::{Queue, QueueError, QueueKind};
use crate::stats::Stats;
use crate::store::Retrier;

/// The clients the handler works with.
#[derive(Debug, Clone)]
pub struct Clients {
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// SNS.
    pub sns: aws_sdk_sns::Client,
    /// The database.
    pub db: Database,
}

/// Why the handler stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A queue refused its configuration (wrong URL, no permission).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The database refused for a reason retrying does not fix (e.g. a failed migration).
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Liveness of one loop, for the systemd watchdog.
#[derive(Debug)]
pub struct Progress {
    origin: Instant,
    last: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// The loop went round.
    pub fn tick(&self) {
        self.last
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// Applies pending migrations, retrying while the database is unreachable.
pub async fn migrate(db: &Database, stop: &CancellationToken) -> Result<(), DbError> {
    let mut delays = Backoff::new(Duration::from_millis(200), Duration::from_secs(10)).iter();
    loop {
        match db.migrate().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && !stop.is_cancelled() => {
                if let DbError::Sql(s) = &e
                    && buttonparty::db::classify(s) == buttonparty::db::ErrorClass::AccessDenied
                {
                    let _ = db.refresh_credentials().await;
                }
                tracing::warn!(error = %e, "database not ready; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return Err(e),
                    _ = tokio::time::sleep(delays.next().unwrap_or_default()) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn discover(
    sqs: &aws_sdk_sqs::Client,
    kind: QueueKind,
    url: &str,
    stop: &CancellationToken,
) -> Result<Option<Queue>, QueueError> {
    let mut delays = Backoff::new(Duration::from_millis(200), Duration::from_secs(10)).iter();
    loop {
        match Queue::discover(sqs.clone(), kind, url).await {
            Ok(q) => return Ok(Some(q)),
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "queue not reachable yet; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delays.next().unwrap_or_default()) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// A running handler's counters, for tests and benchmarks.
pub type SharedStats = Arc<Stats>;

/// Runs the handler until `shutdown` is cancelled and in-flight work is finished.
pub async fn run(
    config: Config,
    clients: Clients,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    run_with_stats(config, clients, shutdown, Arc::default()).await
}

/// [`run`], reporting into `stats`.
pub async fn run_with_stats(
    config: Config,
    clients: Clients,
    shutdown: CancellationToken,
    stats: SharedStats,
) -> Result<(), RunError> {
    // Start-up: the queues and the database must answer before READY.
    let mut queues = Vec::new();
    for (kind, url) in [
        (QueueKind::AddUser, &config.add_user_queue_url),
        (QueueKind::Press, &config.press_queue_url),
        (QueueKind::Powerup, &config.powerup_queue_url),
        (QueueKind::Timestamp, &config.timestamp_queue_url),
    ] {
        match discover(&clients.sqs, kind, url, &shutdown).await? {
            Some(q) => queues.push(q),
            None => return Ok(()),
        }
    }
    if let Err(e) = migrate(&clients.db, &shutdown).await {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        return Err(e.into());
    }
    let [add_user_q, press_q, powerup_q, timestamp_q]: [Queue; 4] =
        queues.clone().try_into().expect("four queues");

    let hard_stop = CancellationToken::new();
    let progress = Arc::new(Progress::default());
    let health = Health::new();
    let inflight = InFlight::new(config.max_in_flight);
    let rounds_caught_up = CatchUp::new();
    let users_caught_up = CatchUp::new();
    let retrier = Retrier {
        db: clients.db.clone(),
        health: health.clone(),
        stats: stats.clone(),
        hard_stop: hard_stop.clone(),
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        progress: progress.clone(),
    };
    let receiver = |queue: &Queue, wait: Duration| Receiver {
        queue: queue.clone(),
        inflight: inflight.clone(),
        health: health.clone(),
        stats: stats.clone(),
        wait,
        batch: 10,
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(20)),
        progress: progress.clone(),
    };

    let mut receivers = JoinSet::new();
    let spawn = |set: &mut JoinSet<()>, r: Receiver, sink: Arc<_>| {
        let stop = shutdown.clone();
        set.spawn(async move { r.run(sink, stop).await });
    };
    fn arc<S: Sink>(s: S) -> Arc<S> {
        Arc::new(s)
    }

    spawn(
        &mut receivers,
        receiver(&timestamp_q, config.catchup_poll),
        arc(rounds::RoundSink {
            queue: timestamp_q.clone(),
            retrier: retrier.clone(),
            stats: stats.clone(),
            catchup: rounds_caught_up.clone(),
        }),
    );
    let push = push::Push {
        sns: clients.sns.clone(),
        platform_application_arn: config.platform_application_arn.clone(),
        topic_arn: config.topic_arn.clone(),
    };
    let user_sink = arc(users::UserSink {
        queue: add_user_q.clone(),
        retrier: retrier.clone(),
        push,
        stats: stats.clone(),
        catchup: users_caught_up.clone(),
        identity_attribute: config.identity_attribute.clone(),
    });
    let r = receiver(&add_user_q, config.catchup_poll);
    let stop = shutdown.clone();
    receivers.spawn(async move { r.run(user_sink, stop).await });
    let powerup_sink = arc(powerups::PowerupSink {
        queue: powerup_q.clone(),
        retrier: retrier.clone(),
        stats: stats.clone(),
        users: users_caught_up.clone(),
        identity_attribute: config.identity_attribute.clone(),
    });
    let r = receiver(&powerup_q, config.poll_wait);
    let stop = shutdown.clone();
    receivers.spawn(async move { r.run(powerup_sink, stop).await });

    let (press_tx, press_rx) = presses::channel(config.max_in_flight);
    let press_sink = arc(presses::PressSink {
        queue: press_q.clone(),
        stats: stats.clone(),
        tx: press_tx,
        identity_attribute: config.identity_attribute.clone(),
    });
    for _ in 0..config.press_receivers {
        let r = receiver(&press_q, config.poll_wait);
        let stop = shutdown.clone();
        let sink = press_sink.clone();
        receivers.spawn(async move { r.run(sink, stop).await });
    }
    drop(press_sink);
    let processor = tokio::spawn(
        presses::PressProcessor {
            queue: press_q.clone(),
            retrier: retrier.clone(),
            stats: stats.clone(),
            limits: BatchLimits {
                max: config.batch_size,
                linger: config.batch_linger,
            },
            rounds: rounds_caught_up.clone(),
            users: users_caught_up.clone(),
            progress: progress.clone(),
        }
        .run(press_rx),
    );

    let background = CancellationToken::new();
    let heartbeat = tokio::spawn(inflight.clone().heartbeat(
        queues.clone(),
        stats.clone(),
        background.clone(),
    ));
    let stats_task = tokio::spawn(stats_loop(
        stats.clone(),
        inflight.clone(),
        config.stats_interval,
        background.clone(),
    ));
    let watchdog_task = tokio::spawn(watchdog_loop(progress, background.clone()));

    notify::ready();
    notify::status("running");
    tracing::info!(
        press_receivers = config.press_receivers,
        batch_size = config.batch_size,
        max_in_flight = config.max_in_flight,
        identity_attribute = config.identity_attribute.as_deref().unwrap_or("-"),
        "incoming handler ready"
    );

    shutdown.cancelled().await;
    notify::stopping();
    tracing::info!(
        held = inflight.len(),
        "stopping: no new messages; finishing work in flight"
    );
    let deadline = tokio::spawn({
        let hard_stop = hard_stop.clone();
        let drain = config.drain;
        async move {
            tokio::time::sleep(drain).await;
            tracing::warn!("drain deadline reached: releasing unapplied messages");
            hard_stop.cancel();
        }
    });
    while receivers.join_next().await.is_some() {}
    let _ = processor.await;
    deadline.abort();
    background.cancel();
    let _ = heartbeat.await;
    let _ = stats_task.await;
    let _ = watchdog_task.await;
    stats.log_and_reset(inflight.len());
    tracing::info!("incoming handler stopped");
    Ok(())
}

async fn stats_loop(
    stats: Arc<Stats>,
    inflight: InFlight,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => stats.log_and_reset(inflight.len()),
        }
    }
}

/// Sends WATCHDOG=1 while the loops go round: receivers tick before each long poll (at most 20 s)
/// and every second while they wait for the database or for room; the processor ticks at least
/// every second; a retried transaction ticks at each attempt.
async fn watchdog_loop(progress: Arc<Progress>, stop: CancellationToken) {
    let Some(interval) = notify::watchdog_interval() else {
        return;
    };
    let stale_after = Duration::from_secs(60).max(interval * 4);
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let age = progress.age();
        if age > stale_after {
            tracing::error!(
                stalled_for_s = age.as_secs(),
                "no loop made progress; withholding the watchdog ping"
            );
        } else {
            notify::watchdog();
        }
    }
}
