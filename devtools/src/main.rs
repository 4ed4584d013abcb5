//! `bp-dev`: ButtonParty's developer tools. See the library crate.

use std::process::ExitCode;

use buttonparty::settings::{LogFormat, LogSettings, parse_or_exit};
use buttonparty_devtools::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    let log = LogSettings {
        filter: cli.log.clone(),
        format: Some(LogFormat::Text),
    };
    if let Err(e) = buttonparty::telemetry::init(&log, "bp-dev") {
        eprintln!("bp-dev: error: {e}");
        return ExitCode::from(2);
    }
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bp-dev: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
