//! `outgoing-handler`: the ButtonParty round scheduler. Thin: configuration, logging, AWS clients,
//! then the library's [`outgoing_handler::run`] or [`outgoing_handler::open_round`].

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use buttonparty::settings::{self, CONFIG_EXIT_CODE};
use buttonparty::{aws, shutdown, telemetry};
use outgoing_handler::config::{Cli, Command};
use outgoing_handler::{Clients, Config, OpenRoundError};

fn main() -> ExitCode {
    let cli: Cli = settings::parse_or_exit();
    let config = cli.command.settings().config().unwrap_or_else(|e| e.exit());
    if let Err(e) = telemetry::init(&cli.log, "outgoing-handler") {
        eprintln!("error: {e}");
        return ExitCode::from(CONFIG_EXIT_CODE as u8);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async_main(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "outgoing-handler failed");
            ExitCode::FAILURE
        }
    }
}

async fn async_main(command: Command, config: Config) -> anyhow::Result<()> {
    let clients = Clients::from_sdk_config(&aws::sdk_config().await);
    match command {
        Command::Run(_) => {
            let shutdown = shutdown::on_signals().context("installing the signal handlers")?;
            outgoing_handler::run(config, clients, shutdown).await?;
            Ok(())
        }
        Command::OpenRound(_) => match outgoing_handler::open_round(&config, &clients).await {
            Ok(opened) => print_round(&opened.round.to_json()),
            Err(OpenRoundError::Announce { round, source }) if source.timestamp_sent() => {
                // The round exists for the incoming handlers: say which, but fail.
                print_round(&round.to_json())?;
                Err(anyhow::Error::new(source).context(format!("round {} opened", round.round_id)))
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// Prints the round as one JSON line on stdout.
fn print_round(json: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")
        .and_then(|()| out.flush())
        .context("writing the round to stdout")
}
