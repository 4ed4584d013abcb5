//! Configuration: clap-derived setting groups that the binaries flatten into their commands.
//!
//! Every setting is a flag and an environment variable (SPEC §5). Each flag's value name *is* its
//! environment variable, so clap's own error lines ("invalid value … for '--press-window-secs
//! <BUTTONPARTY_PRESS_WINDOW_SECS>'") name the variable an operator has to fix. Settings that are
//! required only by some binaries are `Option`s here and are demanded with [`require`], which gives
//! the same one-line error.
//!
//! [`parse_or_exit`] turns any configuration error into exactly one line on stderr and exit code 2.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

/// Exit code for a missing or invalid setting (the convention of `sysexits`' EX_USAGE family that
/// clap uses too).
pub const CONFIG_EXIT_CODE: i32 = 2;

/// A setting that is missing or invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required setting was not given.
    #[error("missing setting {var} (flag --{flag})")]
    Missing {
        /// Environment variable name.
        var: &'static str,
        /// Flag name without the leading dashes.
        flag: &'static str,
    },
    /// A setting has a value that cannot be used.
    #[error("invalid setting {var}: {reason}")]
    Invalid {
        /// Environment variable name.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    /// Prints the error as one line and exits with [`CONFIG_EXIT_CODE`].
    pub fn exit(&self) -> ! {
        eprintln!("error: {self}");
        std::process::exit(CONFIG_EXIT_CODE)
    }
}

/// Parses the command line and environment into `C`. On `--help`/`--version` prints and exits 0;
/// on any error prints one line naming the setting and exits 2.
pub fn parse_or_exit<C: Parser>() -> C {
    match C::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
                _ => {
                    let rendered = e.render().to_string();
                    let first = rendered
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("invalid command line");
                    eprintln!("{}", first.trim_end());
                    std::process::exit(CONFIG_EXIT_CODE)
                }
            }
        }
    }
}

/// Returns the value of an optional setting, or [`ConfigError::Missing`] naming it.
pub fn require<T: Clone>(
    value: &Option<T>,
    var: &'static str,
    flag: &'static str,
) -> Result<T, ConfigError> {
    value.clone().ok_or(ConfigError::Missing { var, flag })
}

/// Log output settings.
#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info` or `info,incoming_handler=debug`.
    #[arg(
        long = "log",
        env = "BUTTONPARTY_LOG",
        value_name = "BUTTONPARTY_LOG",
        default_value = "info",
        global = true
    )]
    pub filter: String,
    /// Log format: `journald`, `text` or `json`. Default: journald when stderr is connected to the
    /// journal (running under systemd), otherwise text.
    #[arg(
        long = "log-format",
        env = "BUTTONPARTY_LOG_FORMAT",
        value_name = "BUTTONPARTY_LOG_FORMAT",
        value_enum,
        global = true
    )]
    pub format: Option<LogFormat>,
}

/// Where and how log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Structured entries sent to the systemd journal.
    Journald,
    /// Human-readable lines on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
}

/// Database settings: a Secrets Manager secret (production) or a URL (development).
#[derive(Clone, Args)]
pub struct DatabaseSettings {
    /// Secrets Manager secret id holding the RDS secret JSON (`username`, `password`, optional
    /// `host`, `port`, `dbname`).
    #[arg(
        long = "db-secret-id",
        env = "BUTTONPARTY_DB_SECRET_ID",
        value_name = "BUTTONPARTY_DB_SECRET_ID"
    )]
    pub secret_id: Option<String>,
    /// Database host, used where the secret has none.
    #[arg(
        long = "db-host",
        env = "BUTTONPARTY_DB_HOST",
        value_name = "BUTTONPARTY_DB_HOST"
    )]
    pub host: Option<String>,
    /// Database port, used where the secret has none.
    #[arg(
        long = "db-port",
        env = "BUTTONPARTY_DB_PORT",
        value_name = "BUTTONPARTY_DB_PORT",
        default_value_t = 3306
    )]
    pub port: u16,
    /// Database (schema) name, used where the secret has none.
    #[arg(
        long = "db-name",
        env = "BUTTONPARTY_DB_NAME",
        value_name = "BUTTONPARTY_DB_NAME",
        default_value = "buttonparty"
    )]
    pub name: String,
    /// `mysql://user:password@host:port/db` — for development, instead of the secret.
    #[arg(
        long = "database-url",
        env = "BUTTONPARTY_DATABASE_URL",
        value_name = "BUTTONPARTY_DATABASE_URL",
        hide_env_values = true
    )]
    pub url: Option<SecretString>,
    /// TLS mode for the database connection: `disabled`, `preferred`, `required`, `verify-ca` or
    /// `verify-identity`. Use `required` or stricter against Aurora.
    #[arg(
        long = "db-ssl-mode",
        env = "BUTTONPARTY_DB_SSL_MODE",
        value_name = "BUTTONPARTY_DB_SSL_MODE",
        default_value = "preferred"
    )]
    pub ssl_mode: String,
    /// PEM file of the certificate authorities that sign the database server's certificate (the
    /// RDS CA bundle on Aurora), for `verify-ca` and `verify-identity`.
    #[arg(
        long = "db-ssl-ca",
        env = "BUTTONPARTY_DB_SSL_CA",
        value_name = "BUTTONPARTY_DB_SSL_CA"
    )]
    pub ssl_ca: Option<std::path::PathBuf>,
    /// Largest number of pooled database connections.
    #[arg(long = "db-max-connections", env = "BUTTONPARTY_DB_MAX_CONNECTIONS", value_name = "BUTTONPARTY_DB_MAX_CONNECTIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_connections: u32,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("secret_id", &self.secret_id)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("name", &self.name)
            .field("url", &self.url.as_ref().map(|_| "[redacted]"))
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_ca", &self.ssl_ca)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Where the database credentials come from.
#[derive(Debug, Clone)]
pub enum DatabaseSource {
    /// A Secrets Manager secret, re-read when the password is rotated.
    Secret {
        /// Secret id or ARN.
        secret_id: String,
    },
    /// A fixed URL.
    Url(SecretString),
}

impl DatabaseSettings {
    /// Which source to use: the URL when given, else the secret; neither is an error naming both.
    pub fn source(&self) -> Result<DatabaseSource, ConfigError> {
        if let Some(url) = &self.url {
            if !url.expose_secret().starts_with("mysql://") {
                return Err(ConfigError::Invalid {
                    var: "BUTTONPARTY_DATABASE_URL",
                    reason: "must start with mysql://".into(),
                });
            }
            return Ok(DatabaseSource::Url(url.clone()));
        }
        match &self.secret_id {
            Some(id) if !id.is_empty() => Ok(DatabaseSource::Secret {
                secret_id: id.clone(),
            }),
            _ => Err(ConfigError::Missing {
                var: "BUTTONPARTY_DB_SECRET_ID",
                flag: "db-secret-id (or BUTTONPARTY_DATABASE_URL)",
            }),
        }
    }

    /// Settings for a fixed URL (tests and tools).
    pub fn from_url(url: &str) -> Self {
        Self {
            secret_id: None,
            host: None,
            port: 3306,
            name: "buttonparty".into(),
            url: Some(SecretString::from(url.to_owned())),
            ssl_mode: "preferred".into(),
            ssl_ca: None,
            max_connections: 8,
        }
    }
}

/// Round timing settings shared by both daemons.
#[derive(Debug, Clone, Args)]
pub struct RoundSettings {
    /// Length of a round's press window, in seconds.
    #[arg(long = "press-window-secs", env = "BUTTONPARTY_PRESS_WINDOW_SECS", value_name = "BUTTONPARTY_PRESS_WINDOW_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub press_window_secs: u64,
    /// Minimum time between two round openings, in seconds.
    #[arg(
        long = "round-min-gap-secs",
        env = "BUTTONPARTY_ROUND_MIN_GAP_SECS",
        value_name = "BUTTONPARTY_ROUND_MIN_GAP_SECS",
        default_value_t = 3600
    )]
    pub round_min_gap_secs: u64,
    /// Probability that a round opens in a given second (0 < p <= 1).
    #[arg(long = "round-chance-per-sec", env = "BUTTONPARTY_ROUND_CHANCE_PER_SEC", value_name = "BUTTONPARTY_ROUND_CHANCE_PER_SEC", default_value_t = 0.0001, value_parser = parse_probability)]
    pub round_chance_per_sec: f64,
}

impl RoundSettings {
    /// The press window.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.press_window_secs)
    }
    /// The minimum gap between openings.
    pub fn min_gap(&self) -> Duration {
        Duration::from_secs(self.round_min_gap_secs)
    }
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if p.is_finite() && p > 0.0 && p <= 1.0 {
        Ok(p)
    } else {
        Err("must be a probability greater than 0 and at most 1".into())
    }
}

/// The SNS topic every push endpoint subscribes to.
#[derive(Debug, Clone, Args)]
pub struct TopicSettings {
    /// ARN of the SNS topic rounds are announced on.
    #[arg(
        long = "topic-arn",
        env = "BUTTONPARTY_TOPIC_ARN",
        value_name = "BUTTONPARTY_TOPIC_ARN"
    )]
    pub topic_arn: Option<String>,
}

impl TopicSettings {
    /// The topic ARN, or a missing-setting error.
    pub fn topic_arn(&self) -> Result<String, ConfigError> {
        require(&self.topic_arn, "BUTTONPARTY_TOPIC_ARN", "topic-arn")
    }
}

/// The round timestamp queue (written by the outgoing handler, read by the incoming handler).
#[derive(Debug, Clone, Args)]
pub struct TimestampQueueSettings {
    /// URL of the queue carrying each round's open/close times.
    #[arg(
        long = "timestamp-queue-url",
        env = "BUTTONPARTY_TIMESTAMP_QUEUE_URL",
        value_name = "BUTTONPARTY_TIMESTAMP_QUEUE_URL"
    )]
    pub timestamp_queue_url: Option<String>,
}

impl TimestampQueueSettings {
    /// The queue URL, or a missing-setting error.
    pub fn url(&self) -> Result<String, ConfigError> {
        require(
            &self.timestamp_queue_url,
            "BUTTONPARTY_TIMESTAMP_QUEUE_URL",
            "timestamp-queue-url",
        )
    }
}

/// Directory for the outgoing handler's schedule state.
#[derive(Debug, Clone, Args)]
pub struct StateDirSettings {
    /// Directory where the outgoing handler keeps its schedule state. Default: `$STATE_DIRECTORY`
    /// (set by systemd's `StateDirectory=`), else `/var/lib/buttonparty`.
    #[arg(
        long = "state-dir",
        env = "BUTTONPARTY_STATE_DIR",
        value_name = "BUTTONPARTY_STATE_DIR"
    )]
    pub state_dir: Option<PathBuf>,
}

impl StateDirSettings {
    /// The directory to use.
    pub fn resolve(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        // systemd may pass several colon-separated directories; the first is ours.
        match std::env::var("STATE_DIRECTORY") {
            Ok(v) if !v.is_empty() => PathBuf::from(v.split(':').next().unwrap_or(&v)),
            _ => PathBuf::from("/var/lib/buttonparty"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        rounds: RoundSettings,
        #[command(flatten)]
        db: DatabaseSettings,
        #[command(flatten)]
        log: LogSettings,
    }

    /// The declared default of an argument (independent of the environment the tests run in).
    fn default_of(id: &str) -> String {
        let cmd = <Probe as clap::CommandFactory>::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == id)
            .unwrap_or_else(|| panic!("no argument {id}"));
        arg.get_default_values()
            .first()
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn defaults_match_the_spec() {
        assert_eq!(default_of("press_window_secs"), "60");
        assert_eq!(default_of("round_min_gap_secs"), "3600");
        assert_eq!(default_of("round_chance_per_sec"), "0.0001");
        assert_eq!(default_of("port"), "3306");
        assert_eq!(default_of("name"), "buttonparty");
        assert_eq!(default_of("filter"), "info");
        assert_eq!(default_of("format"), "");
    }

    #[test]
    fn invalid_value_error_names_the_variable() {
        let e = Probe::try_parse_from(["probe", "--press-window-secs", "abc"]).unwrap_err();
        assert!(
            e.to_string().contains("BUTTONPARTY_PRESS_WINDOW_SECS"),
            "{e}"
        );
        let e = Probe::try_parse_from(["probe", "--round-chance-per-sec", "1.5"]).unwrap_err();
        assert!(
            e.to_string().contains("BUTTONPARTY_ROUND_CHANCE_PER_SEC"),
            "{e}"
        );
        let e = Probe::try_parse_from(["probe", "--press-window-secs", "0"]).unwrap_err();
        assert!(
            e.to_string().contains("BUTTONPARTY_PRESS_WINDOW_SECS"),
            "{e}"
        );
    }

    #[test]
    fn missing_database_source_names_the_secret_variable() {
        let db = DatabaseSettings {
            url: None,
            secret_id: None,
            ..DatabaseSettings::from_url("mysql://unused@localhost/x")
        };
        let e = db.source().unwrap_err();
        assert!(e.to_string().contains("BUTTONPARTY_DB_SECRET_ID"), "{e}");
    }

    #[test]
    fn database_url_wins_over_secret_and_is_never_printed() {
        let p = Probe::try_parse_from([
            "probe",
            "--database-url",
            "mysql://u:sentinel-pw@h/db",
            "--db-secret-id",
            "s",
        ])
        .unwrap();
        assert!(matches!(p.db.source().unwrap(), DatabaseSource::Url(_)));
        assert!(!format!("{:?}", p.db).contains("sentinel-pw"));
        assert!(!format!("{:?}", p.db.source().unwrap()).contains("sentinel-pw"));
    }

    #[test]
    fn state_dir_prefers_the_flag() {
        let s = StateDirSettings {
            state_dir: Some("/x".into()),
        };
        assert_eq!(s.resolve(), PathBuf::from("/x"));
    }
}
