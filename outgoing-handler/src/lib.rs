//! The ButtonParty outgoing handler (SPEC §2, §3, §8; issue 4): decides when rounds open, sends
//! each round's open and close times through the timestamp queue, then publishes the round's push
//! notification to the SNS topic. It never touches the database.
//!
//! - [`config`]: the command line (`run`, `open-round`) and the checked [`Config`];
//! - [`scheduler`]: the per-second decision and the minimum gap;
//! - [`state`]: the last opening, persisted atomically in the state directory;
//! - [`announce`]: the timestamp message, then the push, retried within the round's window;
//! - [`fanout`]: how long a round stays open: the window plus the push's fan-out time;
//! - [`clock`]: the injectable wall clock.
//!
//! The binary is thin: it parses the configuration, sets up logging, builds the AWS clients and
//! calls [`run`] or [`open_round`].

pub mod announce;
pub mod clock;
pub mod config;
pub mod fanout;
pub mod scheduler;
pub mod state;

use std::time::Duration;

use aws_sdk_sqs::config::retry::RetryConfig;
use buttonparty::backoff::Backoff;
use buttonparty::emf::{self, Metric, MetricsMode};
use buttonparty::messages::RoundAnnouncement;
use buttonparty::notify;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;

use crate::announce::{AnnounceError, Announced, Announcer, AttemptError};
use crate::clock::{Clock, SystemClock};
use crate::fanout::{AudienceSource, AudienceTracker, FanOut};
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
    /// The fan-out its close covers.
    pub fan_out: FanOut,
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
        push_rate_per_sec = config.push_rate_per_sec,
        push_audience = %config.push_audience.map_or_else(|| "topic".to_owned(), |n| n.to_string()),
        metrics = %config.metrics,
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

    let Some(audience) = wait_for_dependencies(&announcer, shutdown).await else {
        return Ok(());
    };
    let mut planner = FanOutPlanner::new(&config);
    if let Some(n) = audience {
        planner.tracker.observe(n);
    }
    notify::ready();
    notify::status(&status_line(scheduler.last_opening()));
    tracing::info!(topic_subscriptions = ?audience, "ready: scheduling rounds");

    let mut announce = LoggingAnnouncer {
        announcer,
        planner,
        metrics: MetricsOut::for_daemon(config.metrics),
        planned: None,
    };
    scheduler.run(&mut announce, shutdown).await;
    Ok(())
}

/// Decides each round's fan-out: the override, or the topic's subscription count read before
/// the round, or (when the read fails) the last count read.
#[derive(Debug)]
pub struct FanOutPlanner {
    override_audience: Option<u64>,
    rate_per_sec: u64,
    tracker: AudienceTracker,
}

impl FanOutPlanner {
    /// A planner for `config`'s push settings, with no count read yet.
    pub fn new(config: &Config) -> Self {
        Self {
            override_audience: config.push_audience,
            rate_per_sec: config.push_rate_per_sec,
            tracker: AudienceTracker::new(),
        }
    }

    /// The fan-out of the next round. Reads the topic unless the audience is overridden; a
    /// failed read is a warning and falls back to the last count read (0 when there was none:
    /// the round then gets the base window only).
    pub async fn plan<C: Clock>(&mut self, announcer: &Announcer<C>) -> FanOut {
        let read = match self.override_audience {
            Some(_) => Ok(0),
            None => announcer.topic_audience().await,
        };
        let error = read.as_ref().err().map(ToString::to_string);
        let (audience, source) = self.tracker.resolve(self.override_audience, read);
        match (source, error) {
            (AudienceSource::LastKnown, Some(error)) => tracing::warn!(
                error = %error,
                audience,
                "cannot read the topic's subscription count; the round's close covers the last count read"
            ),
            (AudienceSource::Unknown, Some(error)) => tracing::warn!(
                error = %error,
                "cannot read the topic's subscription count and none was read before; the round gets the base window only"
            ),
            _ => {}
        }
        FanOut {
            audience,
            source,
            rate_per_sec: self.rate_per_sec,
        }
    }
}

/// Waits until the timestamp queue and the topic answer; returns the topic's subscription count
/// (when it has one), or `None` when shutdown came first.
async fn wait_for_dependencies<C: Clock>(
    announcer: &Announcer<C>,
    shutdown: &CancellationToken,
) -> Option<Option<u64>> {
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
            _ = shutdown.cancelled() => return None,
            outcome = checks => outcome,
        };
        let (what, var, error) = match outcome {
            Ok(audience) => {
                if failures > 0 {
                    tracing::info!(failures, "timestamp queue and topic answer now");
                }
                return Some(audience);
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
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The production [`Announce`]: reads the fan-out, announces through SQS and SNS, writes the
/// one log line (and the metric line) per round.
#[derive(Debug)]
struct LoggingAnnouncer<C> {
    announcer: Announcer<C>,
    planner: FanOutPlanner,
    metrics: MetricsOut,
    /// The fan-out planned for the round being opened.
    planned: Option<FanOut>,
}

impl<C: Clock> Announce for LoggingAnnouncer<C> {
    async fn fan_out(&mut self) -> FanOut {
        let planned = self.planner.plan(&self.announcer).await;
        self.planned = Some(planned);
        planned
    }

    async fn announce(&mut self, round: RoundAnnouncement) {
        let fan_out = self
            .planned
            .take()
            .unwrap_or_else(|| FanOut::none(self.planner.rate_per_sec));
        let result = self.announcer.announce(&round).await;
        log_round(&round, &fan_out, &result);
        self.metrics
            .write(&round, &fan_out, &result, SystemClock.now_ms());
        notify::status(&status_line(Some(&LastOpening {
            round_id: round.round_id.clone(),
            opens_at_ms: round.opens_at_ms,
        })));
    }
}

/// The one log line per round opened, with the close's formula and its inputs.
fn log_round(
    round: &RoundAnnouncement,
    fan_out: &FanOut,
    result: &Result<Announced, AnnounceError>,
) {
    let window_ms = round.window();
    let formula = fanout::formula_text(window_ms, fan_out);
    macro_rules! round_event {
        ($level:ident, $($rest:tt)+) => {
            tracing::$level!(
                round_id = %round.round_id,
                opens_at_ms = round.opens_at_ms,
                closes_at_ms = round.closes_at_ms,
                window_ms,
                audience = fan_out.audience,
                audience_source = %fan_out.source,
                push_rate_per_sec = fan_out.rate_per_sec,
                fan_out_ms = fan_out.ms(),
                formula = ?formula,
                $($rest)+
            )
        };
    }
    match result {
        Ok(a) => round_event!(
            info,
            timestamp_attempts = a.timestamp_attempts,
            publish_attempts = a.publish_attempts,
            ttl_secs = a.ttl_secs,
            message_id = %a.message_id,
            "round opened"
        ),
        Err(e) if e.timestamp_sent() => round_event!(
            error,
            error = %e,
            "round opened, but its push was not published: players were not notified"
        ),
        Err(e) => round_event!(
            error,
            error = %e,
            "round not announced: its timestamp message was not sent, so no push either"
        ),
    }
}

/// The `Service` dimension of the outgoing handler's metrics.
pub const METRICS_SERVICE: &str = "outgoing-handler";

/// The EMF line of a round opened: `RoundsOpened` 1, and `PushesPublished` the phones the
/// published push goes to (its audience; 0 when it was not published), with the round's id,
/// fan-out and outcome as properties.
pub fn round_metrics_line(
    round: &RoundAnnouncement,
    fan_out: &FanOut,
    result: &Result<Announced, AnnounceError>,
    now_ms: i64,
) -> String {
    let (pushes, outcome) = match result {
        Ok(_) => (fan_out.audience, "announced"),
        Err(e) if e.timestamp_sent() => (0, "push_not_published"),
        Err(_) => (0, "timestamp_not_sent"),
    };
    emf::line(
        emf::NAMESPACE,
        &[("Service", METRICS_SERVICE)],
        &[
            Metric::count("RoundsOpened", 1),
            Metric::count("PushesPublished", pushes),
        ],
        &[
            ("round_id", round.round_id.clone().into()),
            ("outcome", outcome.into()),
            ("audience_source", fan_out.source.as_str().into()),
            ("fan_out_ms", fan_out.ms().into()),
            ("closes_at_ms", round.closes_at_ms.into()),
        ],
        now_ms,
    )
    .expect("fixed names, counts and a valid namespace always make a line")
}

/// Where metric lines go: nowhere, stdout (the daemon: the journal, or a log agent), or stderr
/// (`open-round`, whose stdout is the round's one JSON line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetricsOut {
    Off,
    Stdout,
    Stderr,
}

impl MetricsOut {
    fn for_daemon(mode: MetricsMode) -> Self {
        match mode {
            MetricsMode::Off => MetricsOut::Off,
            MetricsMode::Emf => MetricsOut::Stdout,
        }
    }

    fn for_command(mode: MetricsMode) -> Self {
        match mode {
            MetricsMode::Off => MetricsOut::Off,
            MetricsMode::Emf => MetricsOut::Stderr,
        }
    }

    fn write(
        self,
        round: &RoundAnnouncement,
        fan_out: &FanOut,
        result: &Result<Announced, AnnounceError>,
        now_ms: i64,
    ) {
        use std::io::Write as _;
        let line = match self {
            MetricsOut::Off => return,
            _ => round_metrics_line(round, fan_out, result, now_ms),
        };
        let written = match self {
            MetricsOut::Stdout => writeln!(std::io::stdout().lock(), "{line}"),
            _ => writeln!(std::io::stderr().lock(), "{line}"),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write the metric line");
        }
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
    let announcer = Announcer::new(
        clients.sqs.clone(),
        clients.sns.clone(),
        &config.timestamp_queue_url,
        &config.topic_arn,
        clock,
    );
    let fan_out = FanOutPlanner::new(config).plan(&announcer).await;
    let round = announce::new_round(
        clock.now_ms(),
        config.window,
        fan_out.ms(),
        &mut rand::rng(),
    );
    state
        .save(&LastOpening {
            round_id: round.round_id.clone(),
            opens_at_ms: round.opens_at_ms,
        })
        .map_err(OpenRoundError::State)?;
    let result = announcer.announce(&round).await;
    log_round(&round, &fan_out, &result);
    MetricsOut::for_command(config.metrics).write(&round, &fan_out, &result, clock.now_ms());
    match result {
        Ok(announced) => Ok(Opened {
            round,
            fan_out,
            announced,
        }),
        Err(source) => Err(OpenRoundError::Announce { round, source }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn round() -> RoundAnnouncement {
        RoundAnnouncement {
            round_id: "1795904163319-9af690be".into(),
            opens_at_ms: 1_795_904_163_319,
            closes_at_ms: 1_795_904_163_319 + 160_000,
            window_ms: Some(60_000),
        }
    }

    const WIDE: FanOut = FanOut {
        audience: 1_000_000,
        source: AudienceSource::Topic,
        rate_per_sec: 10_000,
    };

    #[test]
    fn the_metric_line_counts_the_round_and_the_pushes_published() {
        let ok = Ok(Announced {
            message_id: "m".into(),
            timestamp_attempts: 1,
            publish_attempts: 1,
            ttl_secs: 159,
        });
        let line = round_metrics_line(&round(), &WIDE, &ok, 1_795_904_164_000);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_795_904_164_000_i64);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "ButtonParty");
        assert_eq!(directive["Dimensions"], serde_json::json!([["Service"]]));
        assert_eq!(
            directive["Metrics"],
            serde_json::json!([
                {"Name": "RoundsOpened", "Unit": "Count"},
                {"Name": "PushesPublished", "Unit": "Count"},
            ])
        );
        assert_eq!(v["Service"], "outgoing-handler");
        assert_eq!(v["RoundsOpened"], 1);
        assert_eq!(v["PushesPublished"], 1_000_000);
        assert_eq!(v["round_id"], "1795904163319-9af690be");
        assert_eq!(v["fan_out_ms"], 100_000);
        assert_eq!(v["audience_source"], "topic");
        assert_eq!(v["outcome"], "announced");

        let failed = Err(AnnounceError::PushNotPublished {
            attempts: 3,
            reason: "down".into(),
        });
        let v: Value =
            serde_json::from_str(&round_metrics_line(&round(), &WIDE, &failed, 0)).unwrap();
        assert_eq!(
            (v["RoundsOpened"].clone(), v["PushesPublished"].clone()),
            (1.into(), 0.into())
        );
        assert_eq!(v["outcome"], "push_not_published");
        let failed = Err(AnnounceError::TimestampNotSent {
            attempts: 1,
            reason: "no queue".into(),
        });
        let v: Value =
            serde_json::from_str(&round_metrics_line(&round(), &WIDE, &failed, 0)).unwrap();
        assert_eq!(v["outcome"], "timestamp_not_sent");
        assert_eq!(v["PushesPublished"], 0);
    }

    #[test]
    fn metric_lines_go_to_stdout_for_the_daemon_and_stderr_for_open_round() {
        assert_eq!(MetricsOut::for_daemon(MetricsMode::Emf), MetricsOut::Stdout);
        assert_eq!(
            MetricsOut::for_command(MetricsMode::Emf),
            MetricsOut::Stderr
        );
        assert_eq!(MetricsOut::for_daemon(MetricsMode::Off), MetricsOut::Off);
        assert_eq!(MetricsOut::for_command(MetricsMode::Off), MetricsOut::Off);
    }
}
