//! Command line and settings (SPEC §5): `outgoing-handler run` and `outgoing-handler open-round`,
//! both taking the same settings, each a flag and an environment variable (the flag's value name
//! is the variable). A missing or invalid setting is one line on stderr naming the variable, and
//! exit code 2 (see [`buttonparty::settings::parse_or_exit`] and [`ConfigError::exit`]).

use std::path::PathBuf;
use std::time::Duration;

use buttonparty::emf::{MetricsMode, MetricsSettings};
use buttonparty::settings::{
    ConfigError, LogSettings, RoundSettings, StateDirSettings, TimestampQueueSettings,
    TopicSettings,
};
use clap::{Args, Parser, Subcommand};

use crate::fanout::DEFAULT_PUSH_RATE_PER_SEC;

/// Largest accepted minimum gap: ten years (a larger value is surely a mistake, and keeps all
/// time arithmetic far from overflowing).
pub const MAX_MIN_GAP_SECS: u64 = 10 * 365 * 86_400;

/// `outgoing-handler`: decides when rounds open, sends each round's times through the timestamp
/// queue and publishes its push notification to the SNS topic.
#[derive(Debug, Parser)]
#[command(name = "outgoing-handler", version, about, long_about = None)]
pub struct Cli {
    /// Logging (global: accepted before or after the subcommand).
    #[command(flatten)]
    pub log: LogSettings,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The round scheduler daemon (systemd `Type=notify`): each second a round opens with
    /// probability BUTTONPARTY_ROUND_CHANCE_PER_SEC, never within BUTTONPARTY_ROUND_MIN_GAP_SECS of
    /// the previous opening.
    Run(Settings),
    /// Opens one round now (ignoring the minimum gap, but recording it so that the gap restarts
    /// from it), prints `{"round_id","opens_at_ms","closes_at_ms"}` as one JSON line on stdout.
    OpenRound(Settings),
}

impl Command {
    /// The settings given to the subcommand.
    pub fn settings(&self) -> &Settings {
        match self {
            Command::Run(s) | Command::OpenRound(s) => s,
        }
    }
}

/// The settings of both subcommands, as parsed.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Round timing: window, minimum gap, chance per second.
    #[command(flatten)]
    pub rounds: RoundSettings,
    /// The timestamp queue (required).
    #[command(flatten)]
    pub timestamp_queue: TimestampQueueSettings,
    /// The SNS topic (required).
    #[command(flatten)]
    pub topic: TopicSettings,
    /// Where the schedule state is kept.
    #[command(flatten)]
    pub state_dir: StateDirSettings,
    /// How long the push takes to reach every phone.
    #[command(flatten)]
    pub push: PushSettings,
    /// Metric lines.
    #[command(flatten)]
    pub metrics: MetricsSettings,
}

/// The push fan-out: a round closes `window + ceil(audience / rate)` after it opens.
#[derive(Debug, Clone, Args)]
pub struct PushSettings {
    /// Pushes the push service delivers per second (FCM's default quota is 600,000 a minute).
    #[arg(long = "push-rate-per-sec", env = "BUTTONPARTY_PUSH_RATE_PER_SEC", value_name = "BUTTONPARTY_PUSH_RATE_PER_SEC", default_value_t = DEFAULT_PUSH_RATE_PER_SEC, value_parser = clap::value_parser!(u64).range(1..))]
    pub push_rate_per_sec: u64,
    /// Phones a push reaches, instead of the topic's SubscriptionsConfirmed read before each
    /// round (for emulators that do not count subscriptions, and for tests).
    #[arg(
        long = "push-audience",
        env = "BUTTONPARTY_PUSH_AUDIENCE",
        value_name = "BUTTONPARTY_PUSH_AUDIENCE"
    )]
    pub push_audience: Option<u64>,
}

impl Settings {
    /// Checks the settings and resolves defaults into a [`Config`]; the error names the first
    /// missing or invalid variable.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let timestamp_queue_url = non_blank(
            self.timestamp_queue.url()?,
            "BUTTONPARTY_TIMESTAMP_QUEUE_URL",
            "timestamp-queue-url",
        )?;
        if !(timestamp_queue_url.starts_with("https://")
            || timestamp_queue_url.starts_with("http://"))
        {
            return Err(ConfigError::Invalid {
                var: "BUTTONPARTY_TIMESTAMP_QUEUE_URL",
                reason: "must be a queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)"
                    .into(),
            });
        }
        let topic_arn = non_blank(
            self.topic.topic_arn()?,
            "BUTTONPARTY_TOPIC_ARN",
            "topic-arn",
        )?;
        if !(topic_arn.starts_with("arn:") && topic_arn.contains(":sns:")) {
            return Err(ConfigError::Invalid {
                var: "BUTTONPARTY_TOPIC_ARN",
                reason: "must be an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)".into(),
            });
        }
        if self.rounds.round_min_gap_secs > MAX_MIN_GAP_SECS {
            return Err(ConfigError::Invalid {
                var: "BUTTONPARTY_ROUND_MIN_GAP_SECS",
                reason: format!("must be at most {MAX_MIN_GAP_SECS} (ten years)"),
            });
        }
        Ok(Config {
            timestamp_queue_url,
            topic_arn,
            window: self.rounds.window(),
            min_gap: self.rounds.min_gap(),
            chance_per_sec: self.rounds.round_chance_per_sec,
            state_dir: self.state_dir.resolve(),
            push_rate_per_sec: self.push.push_rate_per_sec,
            push_audience: self.push.push_audience,
            metrics: self.metrics.metrics,
        })
    }
}

/// `value`, unless it is empty or only blanks.
fn non_blank(value: String, var: &'static str, flag: &'static str) -> Result<String, ConfigError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        Err(ConfigError::Missing { var, flag })
    } else {
        Ok(trimmed.to_owned())
    }
}

/// The checked configuration of the outgoing handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// URL of the timestamp queue (`BUTTONPARTY_TIMESTAMP_QUEUE_URL`).
    pub timestamp_queue_url: String,
    /// ARN of the topic the push is published to (`BUTTONPARTY_TOPIC_ARN`).
    pub topic_arn: String,
    /// A round's press window (`BUTTONPARTY_PRESS_WINDOW_SECS`); also the push's longest
    /// time-to-live.
    pub window: Duration,
    /// Minimum time between two openings (`BUTTONPARTY_ROUND_MIN_GAP_SECS`).
    pub min_gap: Duration,
    /// Probability that a round opens in a given second after the gap
    /// (`BUTTONPARTY_ROUND_CHANCE_PER_SEC`).
    pub chance_per_sec: f64,
    /// Directory of the schedule state (`BUTTONPARTY_STATE_DIR`, else `$STATE_DIRECTORY`, else
    /// `/var/lib/buttonparty`).
    pub state_dir: PathBuf,
    /// Pushes per second the push service delivers (`BUTTONPARTY_PUSH_RATE_PER_SEC`, >= 1).
    pub push_rate_per_sec: u64,
    /// Phones a push reaches, instead of the topic's count (`BUTTONPARTY_PUSH_AUDIENCE`).
    pub push_audience: Option<u64>,
    /// Metric lines (`BUTTONPARTY_METRICS`).
    pub metrics: MetricsMode,
}

impl Config {
    /// A configuration with the defaults of the settings that have one (tests and tools).
    pub fn new(
        timestamp_queue_url: impl Into<String>,
        topic_arn: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            timestamp_queue_url: timestamp_queue_url.into(),
            topic_arn: topic_arn.into(),
            window: Duration::from_secs(60),
            min_gap: Duration::from_secs(3600),
            chance_per_sec: 0.0001,
            state_dir: state_dir.into(),
            push_rate_per_sec: DEFAULT_PUSH_RATE_PER_SEC,
            push_audience: None,
            metrics: MetricsMode::Off,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings as if parsed with only the given values (tests must not depend on the
    /// environment, which may hold the dev stack's variables).
    fn settings(queue: Option<&str>, topic: Option<&str>) -> Settings {
        Settings {
            rounds: RoundSettings {
                press_window_secs: 60,
                round_min_gap_secs: 3600,
                round_chance_per_sec: 0.0001,
            },
            timestamp_queue: TimestampQueueSettings {
                timestamp_queue_url: queue.map(str::to_owned),
            },
            topic: TopicSettings {
                topic_arn: topic.map(str::to_owned),
            },
            state_dir: StateDirSettings {
                state_dir: Some("/tmp/x".into()),
            },
            push: PushSettings {
                push_rate_per_sec: DEFAULT_PUSH_RATE_PER_SEC,
                push_audience: None,
            },
            metrics: MetricsSettings::default(),
        }
    }

    const QUEUE: &str = "http://127.0.0.1:4566/000000000000/ts";
    const TOPIC: &str = "arn:aws:sns:us-east-1:000000000000:rounds";

    #[test]
    fn complete_settings_make_a_config() {
        let c = settings(Some(QUEUE), Some(TOPIC)).config().unwrap();
        assert_eq!(c.timestamp_queue_url, QUEUE);
        assert_eq!(c.topic_arn, TOPIC);
        assert_eq!(c.window, Duration::from_secs(60));
        assert_eq!(c.min_gap, Duration::from_secs(3600));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.push_rate_per_sec, 10_000);
        assert_eq!(c.push_audience, None);
        assert_eq!(c.metrics, MetricsMode::Off);
    }

    #[test]
    fn missing_or_blank_settings_name_the_variable() {
        for (q, t, var) in [
            (None, Some(TOPIC), "BUTTONPARTY_TIMESTAMP_QUEUE_URL"),
            (Some("  "), Some(TOPIC), "BUTTONPARTY_TIMESTAMP_QUEUE_URL"),
            (Some(QUEUE), None, "BUTTONPARTY_TOPIC_ARN"),
            (Some(QUEUE), Some(""), "BUTTONPARTY_TOPIC_ARN"),
            (None, None, "BUTTONPARTY_TIMESTAMP_QUEUE_URL"),
        ] {
            let e = settings(q, t).config().unwrap_err();
            assert!(matches!(e, ConfigError::Missing { .. }), "{e:?}");
            assert!(e.to_string().contains(var), "{e}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn malformed_settings_name_the_variable() {
        let e = settings(Some("sqs/ts"), Some(TOPIC)).config().unwrap_err();
        assert!(
            e.to_string().contains("BUTTONPARTY_TIMESTAMP_QUEUE_URL"),
            "{e}"
        );
        let e = settings(Some(QUEUE), Some("rounds")).config().unwrap_err();
        assert!(e.to_string().contains("BUTTONPARTY_TOPIC_ARN"), "{e}");
        let mut s = settings(Some(QUEUE), Some(TOPIC));
        s.rounds.round_min_gap_secs = u64::MAX;
        let e = s.config().unwrap_err();
        assert!(
            e.to_string().contains("BUTTONPARTY_ROUND_MIN_GAP_SECS"),
            "{e}"
        );
    }

    #[test]
    fn both_subcommands_take_the_settings_as_flags() {
        for sub in ["run", "open-round"] {
            let cli = Cli::try_parse_from([
                "outgoing-handler",
                sub,
                "--timestamp-queue-url",
                QUEUE,
                "--topic-arn",
                TOPIC,
                "--round-min-gap-secs",
                "5",
                "--round-chance-per-sec",
                "1",
                "--press-window-secs",
                "7",
                "--state-dir",
                "/tmp/y",
                "--push-rate-per-sec",
                "500",
                "--push-audience",
                "12345",
                "--metrics",
                "emf",
            ])
            .unwrap();
            let c = cli.command.settings().config().unwrap();
            assert_eq!(c.push_rate_per_sec, 500);
            assert_eq!(c.push_audience, Some(12_345));
            assert_eq!(c.metrics, MetricsMode::Emf);
            assert_eq!(c.min_gap, Duration::from_secs(5));
            assert_eq!(c.window, Duration::from_secs(7));
            assert_eq!(c.chance_per_sec, 1.0);
            assert_eq!(c.state_dir, PathBuf::from("/tmp/y"));
        }
    }

    #[test]
    fn help_names_the_environment_variables() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        for var in [
            "BUTTONPARTY_TIMESTAMP_QUEUE_URL",
            "BUTTONPARTY_TOPIC_ARN",
            "BUTTONPARTY_ROUND_MIN_GAP_SECS",
            "BUTTONPARTY_ROUND_CHANCE_PER_SEC",
            "BUTTONPARTY_PRESS_WINDOW_SECS",
            "BUTTONPARTY_STATE_DIR",
            "BUTTONPARTY_PUSH_RATE_PER_SEC",
            "BUTTONPARTY_PUSH_AUDIENCE",
            "BUTTONPARTY_METRICS",
        ] {
            assert!(help.contains(var), "{var} not in help");
        }
    }

    #[test]
    fn a_push_rate_of_zero_or_a_negative_audience_is_refused() {
        for (flag, value) in [
            ("--push-rate-per-sec", "0"),
            ("--push-rate-per-sec", "-5"),
            ("--push-audience", "-1"),
            ("--push-audience", "lots"),
            ("--metrics", "prometheus"),
        ] {
            let e = Cli::try_parse_from([
                "outgoing-handler",
                "open-round",
                "--timestamp-queue-url",
                QUEUE,
                "--topic-arn",
                TOPIC,
                &format!("{flag}={value}"),
            ])
            .unwrap_err();
            assert!(e.to_string().contains(flag), "{flag} {value}: {e}");
        }
    }
}
