//! The ButtonParty incoming handler: the only writer of game state.
//!
//! One receiver task per queue (several for presses and registrations) long-polls SQS and hands
//! each receive to that queue's consumer ([`rounds`], [`users`], [`events`]). The game is a fold
//! of events in send order ([`buttonparty::fold`]): presses and purchases are stored as events and
//! folded per player in batches, one transaction each ([`ledger`]); a round or registration that
//! arrives late marks the players it changes, and the re-fold worker ([`refold`]) judges their
//! events again from a checkpoint. A message is deleted only after what it caused is committed;
//! redeliveries are recognised, so every message takes effect exactly once, and nothing waits in
//! memory or in flight for another message. While the database is unavailable receiving pauses
//! and held messages are kept invisible ([`inflight`]); on SIGTERM receiving stops, in-flight work
//! is committed and deleted, and whatever could not be applied is released.

pub mod batcher;
pub mod config;
pub mod consumer;
pub mod events;
pub mod health;
pub mod identity;
pub mod inflight;
pub mod ledger;
pub mod push;
pub mod queue;
pub mod refold;
pub mod rounds;
pub mod sqs_wire;
pub mod stats;
pub mod store;
pub mod users;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use buttonparty::backoff::Backoff;
use buttonparty::db::{Database, DbError};
use buttonparty::notify;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batcher::BatchLimits;
use crate::config::Config;
use crate::consumer::{Receiver, Sink};
use crate::health::{Health, Liveness};
use crate::inflight::InFlight;
use crate::queue::{Queue, QueueError, QueueKind};
use crate::sqs_wire::SqsWire;
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
    /// The queue client could not be set up (no region configured).
    #[error(transparent)]
    Sqs(#[from] sqs_wire::WireError),
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
    wire: &SqsWire,
    kind: QueueKind,
    url: &str,
    stop: &CancellationToken,
) -> Result<Option<Queue>, QueueError> {
    let mut delays = Backoff::new(Duration::from_millis(200), Duration::from_secs(10)).iter();
    loop {
        match Queue::discover(sqs.clone(), wire.clone(), kind, url).await {
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
    let wire = SqsWire::from_sdk(&clients.sqs).await?;
    let mut queues = Vec::new();
    for (kind, url) in [
        (QueueKind::AddUser, &config.add_user_queue_url),
        (QueueKind::Press, &config.press_queue_url),
        (QueueKind::Powerup, &config.powerup_queue_url),
        (QueueKind::Timestamp, &config.timestamp_queue_url),
    ] {
        match discover(&clients.sqs, &wire, kind, url, &shutdown).await? {
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
    // The queues whose messages may carry the player's identity ask for that attribute.
    let identity = || config.identity_attribute.clone();
    let [add_user_q, press_q, powerup_q, timestamp_q]: [Queue; 4] =
        queues.clone().try_into().expect("four queues");
    let (add_user_q, press_q, powerup_q) = (
        add_user_q.with_attributes(identity()),
        press_q.with_attributes(identity()),
        powerup_q.with_attributes(identity()),
    );

    let hard_stop = CancellationToken::new();
    let returned = consumer::Returned::default();
    let liveness = Liveness::default();
    let health = Health::new();
    let inflight = InFlight::new(config.max_in_flight);
    let refold_wake = Arc::new(Notify::new());
    let retrier = || Retrier {
        db: clients.db.clone(),
        health: health.clone(),
        stats: stats.clone(),
        hard_stop: hard_stop.clone(),
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
    };
    let receiver = |queue: &Queue, n: u32| Receiver {
        queue: queue.clone(),
        inflight: inflight.clone(),
        health: health.clone(),
        stats: stats.clone(),
        wait: config.poll_wait,
        batch: consumer::RECEIVE_BATCH,
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(20)),
        progress: liveness.register(format!("receiver {}#{n}", queue.kind)),
        hard_stop: hard_stop.clone(),
        returned: returned.clone(),
    };

    let mut receivers = JoinSet::new();
    fn spawn<S: Sink>(set: &mut JoinSet<()>, r: Receiver, sink: Arc<S>, stop: &CancellationToken) {
        let stop = stop.clone();
        set.spawn(async move { r.run(sink, stop).await });
    }

    let round_sink = Arc::new(rounds::RoundSink {
        queue: timestamp_q.clone(),
        retrier: retrier(),
        stats: stats.clone(),
        refold: refold_wake.clone(),
    });
    spawn(
        &mut receivers,
        receiver(&timestamp_q, 1),
        round_sink,
        &shutdown,
    );

    let push = push::Push {
        sns: clients.sns.clone(),
        platform_application_arn: config.platform_application_arn.clone(),
        topic_arn: config.topic_arn.clone(),
    };
    let user_sink = Arc::new(users::UserSink {
        queue: add_user_q.clone(),
        retrier: retrier(),
        push,
        stats: stats.clone(),
        identity_attribute: config.identity_attribute.clone(),
        push_concurrency: config.push_concurrency,
    });
    for n in 1..=config.add_user_receivers {
        spawn(
            &mut receivers,
            receiver(&add_user_q, n),
            user_sink.clone(),
            &shutdown,
        );
    }
    drop(user_sink);

    let (event_tx, event_rx) = events::channel(config.max_in_flight);
    for (queue, count) in [(&press_q, config.press_receivers), (&powerup_q, 1)] {
        let sink = Arc::new(events::EventSink {
            queue: queue.clone(),
            stats: stats.clone(),
            tx: event_tx.clone(),
            identity_attribute: config.identity_attribute.clone(),
        });
        for n in 1..=count {
            spawn(&mut receivers, receiver(queue, n), sink.clone(), &shutdown);
        }
    }
    drop(event_tx);
    let processor = tokio::spawn(
        events::Processor {
            queues: HashMap::from([
                (QueueKind::Press, press_q.clone()),
                (QueueKind::Powerup, powerup_q.clone()),
            ]),
            retrier: retrier(),
            stats: stats.clone(),
            limits: BatchLimits {
                max: config.batch_size,
                linger: config.batch_linger,
            },
            progress: liveness.register("event processor"),
            inflight: inflight.clone(),
        }
        .run(event_rx),
    );
    let refold_stop = CancellationToken::new();
    let refold_task = tokio::spawn(
        refold::RefoldWorker {
            retrier: retrier(),
            stats: stats.clone(),
            wake: refold_wake.clone(),
            batch: config.batch_size,
            horizon: config.pending_horizon,
            progress: liveness.register("re-fold worker"),
        }
        .run(refold_stop.clone()),
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
        config.metrics,
        background.clone(),
    ));
    let watchdog_task = tokio::spawn(watchdog_loop(liveness, background.clone()));

    notify::ready();
    notify::status("running");
    tracing::info!(
        press_receivers = config.press_receivers,
        add_user_receivers = config.add_user_receivers,
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
    returned.release_all().await;
    let _ = processor.await;
    refold_stop.cancel();
    let _ = refold_task.await;
    deadline.abort();
    background.cancel();
    let _ = heartbeat.await;
    let _ = stats_task.await;
    let _ = watchdog_task.await;
    stats.log_and_reset(inflight.len(), config.metrics);
    tracing::info!("incoming handler stopped");
    Ok(())
}

async fn stats_loop(
    stats: Arc<Stats>,
    inflight: InFlight,
    every: Duration,
    metrics: buttonparty::emf::MetricsMode,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => stats.log_and_reset(inflight.len(), metrics),
        }
    }
}

/// Sends WATCHDOG=1 while every loop goes round: receivers tick before each long poll (at most
/// 10 s, each attempt bounded by the SDK's attempt timeout) and every second while they wait for
/// the database or for room; the processor and the re-fold worker tick at least every second; a
/// retried transaction ticks at each attempt. One loop silent for longer than
/// max(60 s, 4 × the watchdog interval) withholds the ping, and systemd restarts the handler.
async fn watchdog_loop(liveness: Liveness, stop: CancellationToken) {
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
        match liveness.stalest() {
            Some((name, age)) if age > stale_after => {
                tracing::error!(
                    stalled_loop = %name,
                    stalled_for_s = age.as_secs(),
                    "a loop made no progress; withholding the watchdog ping"
                );
            }
            _ => notify::watchdog(),
        }
    }
}
