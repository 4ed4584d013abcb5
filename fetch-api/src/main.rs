//! `fetch-api`: ButtonParty's read-only fetch API, as a local HTTP server
//! (`fetch-api serve --listen ADDR`) or, when `AWS_LAMBDA_RUNTIME_API` is set, as an AWS Lambda
//! function behind an API Gateway HTTP API. See the library crate for the routes.

use anyhow::Context as _;
use buttonparty::db::Database;
use buttonparty::settings::{self, DatabaseSource};
use fetch_api::config::{self, Cli, ServeArgs};
use fetch_api::{AppState, Store, router, server};

#[tokio::main]
async fn main() {
    let cli: Cli = settings::parse_or_exit();
    let in_lambda = config::running_in_lambda();
    if let Err(e) = buttonparty::telemetry::init(&cli.log, "fetch-api") {
        eprintln!("error: {e}");
        std::process::exit(settings::CONFIG_EXIT_CODE);
    }
    let Some(args) = cli.serve_args(in_lambda) else {
        eprintln!("error: missing subcommand: run `fetch-api serve --listen ADDR` (see --help)");
        std::process::exit(settings::CONFIG_EXIT_CODE);
    };
    if let Err(e) = run(args, in_lambda).await {
        // One line in the log: the error and its causes, never a backtrace.
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

async fn run(args: ServeArgs, in_lambda: bool) -> anyhow::Result<()> {
    let source = args.db.source().unwrap_or_else(|e| e.exit());
    let aws = match source {
        DatabaseSource::Secret { .. } => Some(buttonparty::aws::sdk_config().await),
        DatabaseSource::Url(_) => None,
    };
    let database = Database::new(&args.db, aws.as_ref())
        .await
        .context("setting up the database connection")?;
    let store = Store::new(database, &args.db, &args.fetch);
    let identity_claim = args.fetch.identity_claim.clone().filter(|c| !c.is_empty());
    if identity_claim.is_some() && !in_lambda {
        tracing::warn!(
            "BUTTONPARTY_IDENTITY_CLAIM is set outside Lambda: no request carries verified claims, so /fetch/self answers 401"
        );
    }
    let app = router(AppState {
        identity_claim,
        ..AppState::new(store)
    });

    if in_lambda {
        tracing::info!("running as an AWS Lambda function");
        return server::run_lambda(app)
            .await
            .map_err(|e| anyhow::anyhow!(e))
            .context("Lambda runtime");
    }

    let shutdown = buttonparty::shutdown::on_signals().context("installing signal handlers")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener
        .local_addr()
        .context("reading the listening address")?;
    tracing::info!(listen = %local, "fetch API listening");
    server::serve(listener, app, shutdown)
        .await
        .context("HTTP server")?;
    tracing::info!("fetch API stopped");
    Ok(())
}
