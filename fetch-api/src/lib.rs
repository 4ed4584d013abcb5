//! ButtonParty's read-only fetch API (SPEC §7): `GET /fetch/self?username=S` (a player's score,
//! effective streak, rank, powerups and the current round) and `GET /fetch/lb` (the top 10).
//!
//! One [`axum::Router`] ([`routes::router`]) serves both deployments: the local HTTP server of
//! `fetch-api serve --listen ADDR` ([`server::serve`]) and the AWS Lambda function behind an API
//! Gateway HTTP API with payload format 2.0 ([`server::run_lambda`]).
//!
//! The API only reads: production runs it with a database user that has nothing but
//! `GRANT SELECT ON buttonparty.* TO …`.
//!
//! - [`config`]: command line and environment settings.
//! - [`model`]: the JSON answers and the pure logic that builds them.
//! - [`queries`]: the SQL, each function taking the request's `now`.
//! - [`store`]: the pool, the per-request deadline and the 503/500 sorting of failures.
//! - [`error`]: the JSON error answers.
//! - [`routes`]: the router and handlers.
//! - [`server`]: local server and Lambda adapters.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod model;
pub mod queries;
pub mod routes;
pub mod server;
pub mod store;

pub use error::ApiError;
pub use routes::{AppState, Clock, router};
pub use store::Store;
