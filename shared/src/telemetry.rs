//! Logging setup shared by every binary.
//!
//! Under systemd (stderr connected to the journal, see `JOURNAL_STREAM`) events go to journald as
//! structured entries through `systemd-journal-logger`, so `journalctl -u … -p warning` filters by
//! level. Elsewhere they are text or JSON lines on stderr. The filter comes from `BUTTONPARTY_LOG`.

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use systemd_journal_logger::JournalLog;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::{LogFormat, LogSettings};

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `BUTTONPARTY_LOG` is not a valid filter.
    #[error("invalid setting BUTTONPARTY_LOG: {0}")]
    Filter(String),
    /// The journal socket could not be opened.
    #[error("cannot connect to the systemd journal: {0}")]
    Journal(std::io::Error),
    /// A global subscriber was already installed.
    #[error("logging already initialised")]
    AlreadyInitialised,
}

/// The format to use when none was configured.
pub fn auto_format() -> LogFormat {
    if systemd_journal_logger::connected_to_journal() {
        LogFormat::Journald
    } else {
        LogFormat::Text
    }
}

/// Installs the global subscriber. `identifier` becomes the journal's `SYSLOG_IDENTIFIER`.
pub fn init(settings: &LogSettings, identifier: &str) -> Result<LogFormat, TelemetryError> {
    let filter = EnvFilter::builder()
        .parse(&settings.filter)
        .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let format = settings.format.unwrap_or_else(auto_format);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(secret_guard());
    let result = match format {
        LogFormat::Journald => {
            let journal = JournalLog::new()
                .map_err(TelemetryError::Journal)?
                .with_syslog_identifier(identifier.to_owned())
                .add_extra_field("BUTTONPARTY_VERSION", env!("CARGO_PKG_VERSION"));
            registry.with(JournaldLayer { journal }).try_init()
        }
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInitialised)?;
    Ok(format)
}

/// Crates that log whole requests and responses (push tokens, queue bodies) at debug and trace
/// level. They are capped at info whatever `BUTTONPARTY_LOG` asks, so that no filter setting can
/// make a secret or a push token reach a log.
pub const CAPPED_TARGETS: &[&str] = &[
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_smithy_types",
    "aws_smithy_json",
    "aws_smithy_query",
    "aws_sdk_sqs",
    "aws_sdk_sns",
    "aws_sdk_secretsmanager",
    "aws_config",
    "aws_runtime",
    "aws_sigv4",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
];

/// The filter that enforces [`CAPPED_TARGETS`].
pub fn secret_guard() -> Targets {
    CAPPED_TARGETS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |t, target| t.with_target(*target, LevelFilter::INFO),
    )
}

/// Forwards tracing events to the journal as `log` records: the message followed by the event's
/// fields as `key=value`, and each field also as a journal field (`KEY=value`).
struct JournaldLayer {
    journal: JournalLog,
}

impl std::fmt::Debug for JournaldLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JournaldLayer")
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    pairs: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, format!("{value:?}"));
    }
}

impl Fields {
    fn push(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), value);
            self.pairs.push((field.name().to_owned(), value));
        }
    }
}

impl<S: Subscriber> Layer<S> for JournaldLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => log::Level::Error,
            Level::WARN => log::Level::Warn,
            Level::INFO => log::Level::Info,
            Level::DEBUG => log::Level::Debug,
            Level::TRACE => log::Level::Trace,
        };
        let kvs: Vec<(&str, &str)> = fields
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let kv_slice: &[(&str, &str)] = &kvs;
        // Losing a log line is better than failing the caller.
        let _ = self.journal.journal_send(
            &log::Record::builder()
                .level(level)
                .target(meta.target())
                .module_path(meta.module_path())
                .file(meta.file())
                .line(meta.line())
                .key_values(&kv_slice)
                .args(format_args!("{}{}", fields.message, fields.rest))
                .build(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn sdk_crates_are_capped_at_info_and_ours_are_not() {
        let guard = secret_guard();
        assert!(!guard.would_enable("aws_smithy_runtime::client::orchestrator", &Level::DEBUG));
        assert!(!guard.would_enable("aws_sdk_sns::operation", &Level::TRACE));
        assert!(guard.would_enable("aws_smithy_runtime::client", &Level::INFO));
        assert!(guard.would_enable("incoming_handler::presses", &Level::TRACE));
    }
}
