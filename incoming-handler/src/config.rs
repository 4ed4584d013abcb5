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
    /// Long-poll wait of the timestamp and add-user queues, in seconds (short, because presses
    /// whose rejection depends on them wait for them).
    #[arg(long, env = "BUTTONPARTY_CATCHUP_POLL_SECS", value_name = "BUTTONPARTY_CATCHUP_POLL_SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub catchup_poll_secs: u64,
    /// After SIGTERM, how long in-flight work may take before unapplied messages are released.
    #[arg(
        long,
        env = "BUTTONPARTY_DRAIN_SECS",
        value_name = "BUTTONPARTY_DRAIN_SECS",
        default_value_t = 25
    )]
    pub drain_secs: u64,
    /// Interval of the stats log line, in seconds.
    #[arg(long, env = "BUTTONPARTY_STATS_INTERVAL_SECS", value_name = "BUTTONPARTY_STATS_INTERVAL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub stats_interval_secs: u64,
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
    /// Long-poll wait of the press and powerup queues.
    pub poll_wait: Duration,
    /// Long-poll wait of the timestamp and add-user queues.
    pub catchup_poll: Duration,
    /// Drain deadline after SIGTERM.
    pub drain: Duration,
    /// Stats line interval.
    pub stats_interval: Duration,
    /// Verified-identity message attribute.
    pub identity_attribute: Option<String>,
}

impl RunArgs {
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
            poll_wait: Duration::from_secs(20),
            catchup_poll: Duration::from_secs(self.catchup_poll_secs),
            drain: Duration::from_secs(self.drain_secs),
            stats_interval: Duration::from_secs(self.stats_interval_secs),
            identity_attribute: self.identity_attribute.clone().filter(|a| !a.is_empty()),
        })
    }
}
