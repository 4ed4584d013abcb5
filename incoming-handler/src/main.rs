//! `incoming-handler`: parse the settings, start logging, build the clients, run.

use anyhow::Context as _;
use buttonparty::db::Database;
use buttonparty::settings::parse_or_exit;
use incoming_handler::config::{Cli, Command};
use incoming_handler::{Clients, migrate, run};

/// mimalloc instead of the system allocator: every SQS call allocates and frees many small
/// buffers (HTTP, JSON, signing), and a burst is mostly SQS calls (see the README's
/// Performance section for the measured difference).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = parse_or_exit();
    if let Err(e) = buttonparty::telemetry::init(&cli.log, "incoming-handler") {
        eprintln!("error: {e}");
        std::process::exit(buttonparty::settings::CONFIG_EXIT_CODE);
    }
    // Every setting is checked before anything is contacted.
    let config = match &cli.command {
        Command::Run(args) => Some(args.config().unwrap_or_else(|e| e.exit())),
        Command::Migrate(_) => None,
    };
    cli.command.db().source().unwrap_or_else(|e| e.exit());
    let shutdown = buttonparty::shutdown::on_signals().context("installing signal handlers")?;
    let aws = buttonparty::aws::sdk_config().await;
    match cli.command {
        Command::Migrate(args) => {
            let db = Database::new(&args.db, Some(&aws))
                .await
                .context("database settings")?;
            migrate(&db, &shutdown)
                .await
                .context("applying migrations")?;
            tracing::info!("migrations applied");
        }
        Command::Run(args) => {
            let config = config.expect("validated above");
            let db = connect(&args.db, &aws, &shutdown).await?;
            let Some(db) = db else { return Ok(()) };
            let clients = Clients {
                sqs: aws_sdk_sqs::Client::new(&aws),
                sns: aws_sdk_sns::Client::new(&aws),
                db,
            };
            run(config, clients, shutdown).await?;
        }
    }
    Ok(())
}

/// Builds the pool, retrying while Secrets Manager is unreachable.
async fn connect(
    settings: &buttonparty::settings::DatabaseSettings,
    aws: &aws_config::SdkConfig,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<Database>> {
    let mut delays = buttonparty::backoff::Backoff::default().iter();
    loop {
        match Database::new(settings, Some(aws)).await {
            Ok(db) => return Ok(Some(db)),
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "database credentials not available yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delays.next().unwrap_or_default()) => {}
                }
            }
            Err(e) => return Err(e).context("database settings"),
        }
    }
}
