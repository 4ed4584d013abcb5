//! Command line and environment settings of `fetch-api`.
//!
//! `fetch-api serve --listen ADDR` runs the API as a local HTTP server. When
//! `AWS_LAMBDA_RUNTIME_API` is set (inside AWS Lambda) the same binary serves the same router as a
//! Lambda function behind an API Gateway HTTP API; Lambda starts the bootstrap without arguments,
//! so every setting is also an environment variable and the subcommand may be omitted there.

use std::net::SocketAddr;
use std::time::Duration;

use buttonparty::settings::{DatabaseSettings, LogSettings};
use clap::{Args, Parser, Subcommand};

/// The environment variable whose presence means "running inside AWS Lambda".
pub const LAMBDA_RUNTIME_API_VAR: &str = "AWS_LAMBDA_RUNTIME_API";

/// Whether the process runs inside AWS Lambda (`AWS_LAMBDA_RUNTIME_API` is set and not empty).
pub fn running_in_lambda() -> bool {
    std::env::var_os(LAMBDA_RUNTIME_API_VAR).is_some_and(|v| !v.is_empty())
}

/// `fetch-api`: the read-only fetch API of ButtonParty.
#[derive(Debug, Parser)]
#[command(
    name = "fetch-api",
    version,
    about = "ButtonParty's read-only fetch API: GET /fetch/self?username=S and GET /fetch/lb",
    long_about = "ButtonParty's read-only fetch API: GET /fetch/self?username=S (a player's score, \
effective streak, rank, powerups and the current round) and GET /fetch/lb (the top 10).\n\n\
`fetch-api serve --listen ADDR` runs it as a local HTTP server. When AWS_LAMBDA_RUNTIME_API is \
set (inside AWS Lambda) the same router runs as a Lambda function behind an API Gateway HTTP API \
(payload format 2.0); there the subcommand may be omitted and settings come from the \
environment.\n\n\
The API only reads. In production give it a read-only database user, e.g.\n  \
CREATE USER 'buttonparty_ro'@'%' IDENTIFIED BY '…';\n  \
GRANT SELECT ON buttonparty.* TO 'buttonparty_ro'@'%';\n\
and point BUTTONPARTY_DB_SECRET_ID at a secret holding that user's credentials.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to run (default, inside Lambda only: `serve`).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of `serve`, accepted without the subcommand (how Lambda starts the binary).
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogSettings,
}

impl Cli {
    /// The settings of the server to run: those of `serve`, or the top-level ones when the
    /// subcommand was omitted. `None` when no subcommand was given outside Lambda.
    pub fn serve_args(self, in_lambda: bool) -> Option<ServeArgs> {
        match self.command {
            Some(Command::Serve(args)) => Some(args),
            None if in_lambda => Some(self.serve),
            None => None,
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serves the API: over HTTP on --listen, or as a Lambda function when
    /// AWS_LAMBDA_RUNTIME_API is set.
    Serve(ServeArgs),
}

/// Settings of the API server.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the local HTTP server listens on (ignored inside Lambda).
    #[arg(
        long = "listen",
        env = "BUTTONPARTY_FETCH_LISTEN",
        value_name = "BUTTONPARTY_FETCH_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Database connection. Production uses a read-only user (GRANT SELECT ON buttonparty.*).
    #[command(flatten)]
    pub db: DatabaseSettings,
    /// Timeouts.
    #[command(flatten)]
    pub fetch: FetchSettings,
}

/// Timeouts of the fetch API's database access.
#[derive(Debug, Clone, Args)]
pub struct FetchSettings {
    /// Longest wait, in milliseconds, for a database connection and then for all the queries of
    /// one request; past it the request answers 503 (database unavailable).
    #[arg(
        long = "db-timeout-ms",
        env = "BUTTONPARTY_FETCH_DB_TIMEOUT_MS",
        value_name = "BUTTONPARTY_FETCH_DB_TIMEOUT_MS",
        default_value_t = 2_000,
        value_parser = clap::value_parser!(u64).range(1..=60_000)
    )]
    pub db_timeout_ms: u64,
    /// Verified identity: when set (e.g. `sub`), `GET /fetch/self` answers for the player named by
    /// this claim of API Gateway's JWT authorizer and ignores the `username` query parameter; a
    /// request without the claim gets 401. Only meaningful as a Lambda behind the authorizer.
    #[arg(
        long = "identity-claim",
        env = "BUTTONPARTY_IDENTITY_CLAIM",
        value_name = "BUTTONPARTY_IDENTITY_CLAIM"
    )]
    pub identity_claim: Option<String>,
}

impl FetchSettings {
    /// The database timeout as a [`Duration`].
    pub fn db_timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms)
    }
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            db_timeout_ms: 2_000,
            identity_claim: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_parses_listen_and_defaults() {
        let cli = Cli::try_parse_from([
            "fetch-api",
            "serve",
            "--listen",
            "127.0.0.1:9999",
            "--database-url",
            "mysql://u@h/db",
        ])
        .unwrap();
        let args = cli.serve_args(false).unwrap();
        assert_eq!(args.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(args.fetch.db_timeout_ms, 2_000);
        assert_eq!(args.fetch.db_timeout(), Duration::from_secs(2));
    }

    #[test]
    fn no_subcommand_is_serve_only_inside_lambda() {
        let cli = Cli::try_parse_from(["fetch-api"]).unwrap();
        assert!(cli.serve_args(false).is_none());
        let cli = Cli::try_parse_from(["fetch-api"]).unwrap();
        let args = cli.serve_args(true).unwrap();
        assert_eq!(args.listen, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn invalid_timeout_names_the_variable() {
        let e = Cli::try_parse_from(["fetch-api", "serve", "--db-timeout-ms", "0"]).unwrap_err();
        assert!(
            e.to_string().contains("BUTTONPARTY_FETCH_DB_TIMEOUT_MS"),
            "{e}"
        );
        let e = Cli::try_parse_from(["fetch-api", "serve", "--listen", "nope"]).unwrap_err();
        assert!(e.to_string().contains("BUTTONPARTY_FETCH_LISTEN"), "{e}");
    }

    #[test]
    fn help_mentions_the_read_only_user() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("GRANT SELECT ON buttonparty.*"), "{help}");
    }
}
