//! The ButtonParty outgoing handler (SPEC §2, §3, §8; issue 4): decides when rounds open, sends
//! each round's open and close times through the timestamp queue, then publishes the round's push
//! notification to the SNS topic. It never touches the database.
//!
//! - [`config`]: the command line (`run`, `open-round`) and the checked [`Config`];
//! - [`scheduler`]: the per-second decision and the minimum gap;
//! - [`state`]: the last opening, persisted atomically in the state directory;
//! - [`announce`]: the timestamp message, then the push, retried within the round's window;
//! - [`clock`]: the injectable wall clock.
//!
//! The binary is thin: it parses the configuration, sets up logging, builds the AWS clients and
//! calls [`run`] or [`open_round`].

pub mod announce;
pub mod clock;
pub mod config;
pub mod scheduler;
pub mod state;

use std::time::Duration;

use aws_sdk_sqs::config::retry::RetryConfig;
use buttonparty::backoff::Backoff;
use buttonparty::messages::RoundAnnouncement;
use buttonparty::notify;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;

use crate::announce::{AnnounceError, Announced, Announcer, AttemptError};
use crate::clock::{Clock, SystemClock};
use crate::scheduler::{Announce, Scheduler, SchedulerSettings};
use crate::state::{LastOpening, StateError, StateFile, Store};

/// How long an announcement in progress may go on after `SIGTERM` before the daemon exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Delays between checks of the queue and topic at start-up.
const STARTUP_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// The AWS clients the handler uses.
#[derive(Debug, Clone)]
pub struct Clients {
    /// SQS, for the timestamp queue.
    pub sqs: aws_sdk_sqs::Client,
    /// SNS, for the topic.
    pub sns: aws_sdk_sns::Client,
}

impl Clients {
    /// Clients from the SDK configuration, with the SDK's own retries turned off: the handler
    /// retries with the shared [`Backoff`], bounded by the round's window, and counts attempts.
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig) -> Self {
        let sqs = aws_sdk_sqs::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .build();
        let sns = aws_sdk_sns::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .build();
        Self {
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            sns: aws_sdk_sns::Client::from_conf(sns),
        }
    }
}

/// The daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory cannot be written, so openings could not be recorded and a restart
    /// could open a round inside the minimum gap. A retry (a restart) helps only once an operator
    /// fixed the directory.
    #[error("schedule state directory unusable")]
    StateDir(#[source] StateError),
}

/// `open-round` failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenRoundError {
    /// The opening could not be recorded, so the round was not opened. Retrying helps once the
    /// state directory is fixed.
    #[error("cannot record the round opening, round not opened")]
    State(#[source] StateError),
    /// The round could not be (completely) announced; see
    /// [`AnnounceError::timestamp_sent`] for whether it exists for the incoming handlers. Running
    /// `open-round` again opens a new round.
    #[error("round {} not fully announced", round.round_id)]
    Announce {
        /// The round that was opened and recorded.
        round: RoundAnnouncement,
        /// What failed.
        #[source]
        source: AnnounceError,
    },
}

/// A round opened by [`open_round`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The round, as sent to the timestamp queue.
    pub round: RoundAnnouncement,
    /// How it was announced.
    pub announced: Announced,
}

/// Runs the scheduler daemon until `shutdown` is cancelled:
///
/// 1. checks that the state directory is writable and reads the last opening;
/// 2. waits (retrying with backoff, logging each failure) until the timestamp queue
///    (`GetQueueAttributes`) and the topic (`GetTopicAttributes`) answer, then sends `READY=1`;
/// 3. ticks every second, opening rounds and sending `WATCHDOG=1`;
/// 4. on cancellation sends `STOPPING=1` at once and returns, after letting an announcement in
///    progress finish for at most [`SHUTDOWN_GRACE`].
pub async fn run(
    config: Config,
    clients: Clients,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let stopping = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            notify::stopping();
            tracing::info!("stopping");
        }
    });
    let result = run_until_stopped(config, clients, &shutdown).await;
    if shutdown.is_cancelled() {
        // Make sure STOPPING=1 went out before the process exits.
        let _ = stopping.await;
    } else {
        stopping.abort();
    }
    result
}

async fn run_until_stopped(
    config: Config,
    clients: Clients,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    let state = StateFile::new(&config.state_dir);
    state.check_writable().map_err(RunError::StateDir)?;
    tracing::info!(
        timestamp_queue_url = %config.timestamp_queue_url,
        topic_arn = %config.topic_arn,
        window_secs = config.window.as_secs(),
        min_gap_secs = config.min_gap.as_secs(),
        chance_per_sec = config.chance_per_sec,
        state_file = %state.path().display(),
        "outgoing handler starting"
    );
    let settings = SchedulerSettings {
        chance_per_sec: config.chance_per_sec,
        min_gap: config.min_gap,
        window: config.window,
        shutdown_grace: SHUTDOWN_GRACE,
        watchdog: notify::watchdog_interval(),
    };
    let mut scheduler = Scheduler::resume(settings, StdRng::from_os_rng(), SystemClock, state);
    let announcer = Announcer::new(
        clients.sqs,
        clients.sns,
        &config.timestamp_queue_url,
        &config.topic_arn,
        SystemClock,
    );

    if !wait_for_dependencies(&announcer, shutdown).await {
        return Ok(());
    }
    notify::ready();
    notify::status(&status_line(scheduler.last_opening()));
    tracing::info!("ready: scheduling rounds");

    let mut announce = LoggingAnnouncer { announcer };
    scheduler.run(&mut announce, shutdown).await;
    Ok(())
}

/// Waits until the timestamp queue and the topic answer; `false` when shutdown came first.
async fn wait_for_dependencies<C: Clock>(
    announcer: &Announcer<C>,
    shutdown: &CancellationToken,
) -> bool {
    let mut delays = STARTUP_BACKOFF.iter();
    let mut failures = 0u32;
    loop {
        let checks = async {
            announcer
                .check_timestamp_queue()
                .await
                .map_err(|e| ("timestamp queue", "BUTTONPARTY_TIMESTAMP_QUEUE_URL", e))?;
            announcer
                .check_topic()
                .await
                .map_err(|e| ("topic", "BUTTONPARTY_TOPIC_ARN", e))
        };
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return false,
            outcome = checks => outcome,
        };
        let (what, var, error) = match outcome {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "timestamp queue and topic answer now");
                }
                return true;
            }
            Err(failure) => failure,
        };
        failures += 1;
        let delay = delays.next().unwrap_or(STARTUP_BACKOFF.max);
        let hint = match error {
            AttemptError::Permanent(_) => format!("check {var}; "),
            AttemptError::Transient(_) => String::new(),
        };
        tracing::warn!(
            dependency = %what,
            error = %error,
            attempt = failures,
            retry_in_ms = delay.as_millis() as u64,
            "{what} does not answer; {hint}not ready yet, retrying"
        );
        notify::status(&format!("waiting for the {what}: {error}"));
        // The watchdog is enforced only after READY=1; pinging meanwhile is harmless.
        notify::watchdog();
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The production [`Announce`]: announces through SQS and SNS and writes the one log line per
/// round.
#[derive(Debug)]
struct LoggingAnnouncer<C> {
    announcer: Announcer<C>,
}

impl<C: Clock> Announce for LoggingAnnouncer<C> {
    async fn announce(&mut self, round: RoundAnnouncement) {
        let result = self.announcer.announce(&round).await;
        log_round(&round, &result);
        notify::status(&status_line(Some(&LastOpening {
            round_id: round.round_id.clone(),
            opens_at_ms: round.opens_at_ms,
        })));
    }
}

/// The one log line per round opened.
fn log_round(round: &RoundAnnouncement, result: &Result<Announced, AnnounceError>) {
    match result {
        Ok(a) => tracing::info!(
            round_id = %round.round_id,
            opens_at_ms = round.opens_at_ms,
            closes_at_ms = round.closes_at_ms,
            timestamp_attempts = a.timestamp_attempts,
            publish_attempts = a.publish_attempts,
            ttl_secs = a.ttl_secs,
            message_id = %a.message_id,
            "round opened"
        ),
        Err(e) if e.timestamp_sent() => tracing::error!(
            round_id = %round.round_id,
            opens_at_ms = round.opens_at_ms,
            closes_at_ms = round.closes_at_ms,
            error = %e,
            "round opened, but its push was not published: players were not notified"
        ),
        Err(e) => tracing::error!(
            round_id = %round.round_id,
            opens_at_ms = round.opens_at_ms,
            closes_at_ms = round.closes_at_ms,
            error = %e,
            "round not announced: its timestamp message was not sent, so no push either"
        ),
    }
}

fn status_line(last: Option<&LastOpening>) -> String {
    match last {
        Some(l) => format!(
            "scheduling rounds; last round {} opened at {} ms",
            l.round_id, l.opens_at_ms
        ),
        None => "scheduling rounds; no round opened yet".to_owned(),
    }
}

/// Opens one round now, ignoring the minimum gap: records it in the state (so the daemon's gap
/// restarts from it), then announces it (timestamp message, then push, within the window).
pub async fn open_round(config: &Config, clients: &Clients) -> Result<Opened, OpenRoundError> {
    let clock = SystemClock;
    let state = StateFile::new(&config.state_dir);
    let round = announce::new_round(clock.now_ms(), config.window, &mut rand::rng());
    state
        .save(&LastOpening {
            round_id: round.round_id.clone(),
            opens_at_ms: round.opens_at_ms,
        })
        .map_err(OpenRoundError::State)?;
    let announcer = Announcer::new(
        clients.sqs.clone(),
        clients.sns.clone(),
        &config.timestamp_queue_url,
        &config.topic_arn,
        clock,
    );
    let result = announcer.announce(&round).await;
    log_round(&round, &result);
    match result {
        Ok(announced) => Ok(Opened { round, announced }),
        Err(source) => Err(OpenRoundError::Announce { round, source }),
    }
}
