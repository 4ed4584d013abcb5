//! The incoming handler's command line: `run` (the daemon) and `migrate`.

use std::time::Duration;

use buttonparty::settings::{
    ConfigError, DatabaseSettings, LogSettings, TimestampQueueSettings, TopicSettings, require,
};
use clap::{Args, Parser, Subcommand};

/// ButtonParty incoming handler: the only writer of game state. Long-polls the add-user, press,
/// powerup and timestamp queues, applies the game rules and writes to the database in batches.
#[derive(Debug, Parser)]
#[command(name = "incoming-handler", version, about, long_about = None)]
pub struct Cli {
    /// Logging.
    #[command(flatten)]
    pub log: LogSettings,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (applies pending migrations first).
    Run(Box<RunArgs>),
    /// Apply pending database migrations and exit.
    Migrate(MigrateArgs),
}

impl Command {
    /// The database settings of either subcommand.
    pub fn db(&self) -> &DatabaseSettings {
        match self {
            Command::Run(args) => &args.db,
            Command::Migrate(args) => &args.db,
        }
    }
}

/// Settings of `migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Database.
    #[command(flatten)]
    pub db: DatabaseSettings,
}

/// Settings of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Database.
    #[command(flatten)]
    pub db: DatabaseSettings,
    /// URL of the add-user queue.
    #[arg(
        long,
        env = "BUTTONPARTY_ADD_USER_QUEUE_URL",
        value_name = "BUTTONPARTY_ADD_USER_QUEUE_URL"
    )]
    pub add_user_queue_url: Option<String>,
    /// URL of the press queue.
    #[arg(
        long,
        env = "BUTTONPARTY_PRESS_QUEUE_URL",
        value_name = "BUTTONPARTY_PRESS_QUEUE_URL"
    )]
    pub press_queue_url: Option<String>,
    /// URL of the powerup queue.
    #[arg(
        long,
        env = "BUTTONPARTY_POWERUP_QUEUE_URL",
        value_name = "BUTTONPARTY_POWERUP_QUEUE_URL"
    )]
    pub powerup_queue_url: Option<String>,
    /// The timestamp queue.
    #[command(flatten)]
    pub timestamp: TimestampQueueSettings,
    /// The topic every push endpoint subscribes to.
    #[command(flatten)]
    pub topic: TopicSettings,
    /// ARN of the SNS platform application (FCM) push endpoints are created under.
    #[arg(
        long,
        env = "BUTTONPARTY_PLATFORM_APPLICATION_ARN",
        value_name = "BUTTONPARTY_PLATFORM_APPLICATION_ARN"
    )]
    pub platform_application_arn: Option<String>,
    /// Concurrent receivers on the press queue.
    #[arg(long, env = "BUTTONPARTY_PRESS_RECEIVERS", value_name = "BUTTONPARTY_PRESS_RECEIVERS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub press_receivers: u32,
    /// Largest press batch written in one transaction.
    #[arg(long, env = "BUTTONPARTY_BATCH_SIZE", value_name = "BUTTONPARTY_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub batch_size: u32,
    /// How long a batch waits for more presses after its first, in milliseconds. A press is
    /// judged by its SentTimestamp, so waiting costs nothing but latency, and it is what keeps a
    /// burst's batches large (one transaction of a few statements per hundreds of presses)
    /// however fast the messages are deleted.
    #[arg(
        long,
        env = "BUTTONPARTY_BATCH_LINGER_MS",
        value_name = "BUTTONPARTY_BATCH_LINGER_MS",
        default_value_t = 250
    )]
    pub batch_linger_ms: u64,
    /// Most messages held (received, not yet deleted) at once.
    #[arg(long, env = "BUTTONPARTY_MAX_IN_FLIGHT", value_name = "BUTTONPARTY_MAX_IN_FLIGHT", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    pub max_in_flight: u32,
    /// Concurrent receivers on the add-user queue.
    #[arg(long, env = "BUTTONPARTY_ADD_USER_RECEIVERS", value_name = "BUTTONPARTY_ADD_USER_RECEIVERS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub add_user_receivers: u32,
    /// Players whose push endpoints one add-user receiver brings up to date at once (SNS calls
    /// in flight per receiver).
    #[arg(long, env = "BUTTONPARTY_PUSH_CONCURRENCY", value_name = "BUTTONPARTY_PUSH_CONCURRENCY", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub push_concurrency: u32,
    /// Events of names that never register are kept this long (seconds after they were sent),
    /// then count as rejected; rejected events are removed after it too. Must exceed the
    /// queues' message retention (at most 14 days), so that nothing sent before them can still
    /// arrive. Default 15 days.
    #[arg(long, env = "BUTTONPARTY_PENDING_HORIZON_SECS", value_name = "BUTTONPARTY_PENDING_HORIZON_SECS", default_value_t = 1_296_000, value_parser = clap::value_parser!(u64).range(60..))]
    pub pending_horizon_secs: u64,
    /// After SIGTERM, how long in-flight work may take before unapplied messages are released.
    #[arg(
        long,
        env = "BUTTONPARTY_DRAIN_SECS",
        value_name = "BUTTONPARTY_DRAIN_SECS",
        default_value_t = 25
    )]
    pub drain_secs: u64,
    /// The unit's stop timeout (systemd `TimeoutStopSec`), in seconds: the drain must end well
    /// before it (`BUTTONPARTY_DRAIN_SECS` at most this minus 10).
    #[arg(long, env = "BUTTONPARTY_STOP_TIMEOUT_SECS", value_name = "BUTTONPARTY_STOP_TIMEOUT_SECS", default_value_t = 45, value_parser = clap::value_parser!(u64).range(11..))]
    pub stop_timeout_secs: u64,
    /// Interval of the stats log line, in seconds.
    #[arg(long, env = "BUTTONPARTY_STATS_INTERVAL_SECS", value_name = "BUTTONPARTY_STATS_INTERVAL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub stats_interval_secs: u64,
    /// Metrics output (`emf`: the stats line also as a CloudWatch Embedded Metric Format line).
    #[command(flatten)]
    pub metrics: buttonparty::emf::MetricsSettings,
    /// When set, the SQS message attribute that carries the player's verified identity (filled by
    /// API Gateway from the JWT authorizer's claims); the body's username is then ignored and a
    /// message without the attribute is malformed.
    #[arg(
        long,
        env = "BUTTONPARTY_IDENTITY_ATTRIBUTE",
        value_name = "BUTTONPARTY_IDENTITY_ATTRIBUTE"
    )]
    pub identity_attribute: Option<String>,
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Add-user queue URL.
    pub add_user_queue_url: String,
    /// Press queue URL.
    pub press_queue_url: String,
    /// Powerup queue URL.
    pub powerup_queue_url: String,
    /// Timestamp queue URL.
    pub timestamp_queue_url: String,
    /// SNS topic ARN.
    pub topic_arn: String,
    /// SNS platform application ARN.
    pub platform_application_arn: String,
    /// Receivers on the press queue.
    pub press_receivers: u32,
    /// Press batch size.
    pub batch_size: usize,
    /// Press batch linger.
    pub batch_linger: Duration,
    /// Held-message bound.
    pub max_in_flight: usize,
    /// Long-poll wait of every queue.
    pub poll_wait: Duration,
    /// Receivers on the add-user queue.
    pub add_user_receivers: u32,
    /// Push endpoints synced at once per add-user receiver.
    pub push_concurrency: usize,
    /// How long events of unregistered names are kept.
    pub pending_horizon: Duration,
    /// Drain deadline after SIGTERM.
    pub drain: Duration,
    /// Stats line interval.
    pub stats_interval: Duration,
    /// Verified-identity message attribute.
    pub identity_attribute: Option<String>,
    /// Whether the stats line is also printed as an EMF line.
    pub metrics: buttonparty::emf::MetricsMode,
}

/// Long-poll wait of every receive: at most this long for a stop to wait for an outstanding
/// receive (which is let finish, then released).
pub const POLL_WAIT: Duration = Duration::from_secs(10);

/// Time kept between the end of the drain and the unit's stop timeout.
pub const STOP_MARGIN_SECS: u64 = 10;

impl RunArgs {
    /// The drain deadline, checked against the stop timeout.
    fn drain(&self) -> Result<Duration, ConfigError> {
        let longest = self.stop_timeout_secs.saturating_sub(STOP_MARGIN_SECS);
        if self.drain_secs > longest {
            return Err(ConfigError::Invalid {
                var: "BUTTONPARTY_DRAIN_SECS",
                reason: format!(
                    "{} s does not end {STOP_MARGIN_SECS} s before the stop timeout \
                     (BUTTONPARTY_STOP_TIMEOUT_SECS = {} s): at most {longest}",
                    self.drain_secs, self.stop_timeout_secs
                ),
            });
        }
        Ok(Duration::from_secs(self.drain_secs))
    }

    /// Validates the settings; a missing one is named.
    pub fn config(&self) -> Result<Config, ConfigError> {
        Ok(Config {
            add_user_queue_url: require(
                &self.add_user_queue_url,
                "BUTTONPARTY_ADD_USER_QUEUE_URL",
                "add-user-queue-url",
            )?,
            press_queue_url: require(
                &self.press_queue_url,
                "BUTTONPARTY_PRESS_QUEUE_URL",
                "press-queue-url",
            )?,
            powerup_queue_url: require(
                &self.powerup_queue_url,
                "BUTTONPARTY_POWERUP_QUEUE_URL",
                "powerup-queue-url",
            )?,
            timestamp_queue_url: self.timestamp.url()?,
            topic_arn: self.topic.topic_arn()?,
            platform_application_arn: require(
                &self.platform_application_arn,
                "BUTTONPARTY_PLATFORM_APPLICATION_ARN",
                "platform-application-arn",
            )?,
            press_receivers: self.press_receivers,
            batch_size: self.batch_size as usize,
            batch_linger: Duration::from_millis(self.batch_linger_ms),
            max_in_flight: self.max_in_flight as usize,
            poll_wait: POLL_WAIT,
            add_user_receivers: self.add_user_receivers,
            push_concurrency: self.push_concurrency as usize,
            pending_horizon: Duration::from_secs(self.pending_horizon_secs),
            drain: self.drain()?,
            stats_interval: Duration::from_secs(self.stats_interval_secs),
            identity_attribute: self.identity_attribute.clone().filter(|a| !a.is_empty()),
            metrics: self.metrics.metrics,
        })
    }
}
