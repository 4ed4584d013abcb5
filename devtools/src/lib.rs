//! ButtonParty developer tools (`bp-dev`): simulated players that act exactly as API Gateway
//! enqueues the app's requests (the one-command demo and the benchmark's load generator), and the
//! waits and the summary the demo script uses.
//!
//! - [`players`]: names, fake push tokens and the SPEC §4 message bodies;
//! - [`plan`]: the seeded press schedule of a round (pure);
//! - [`send`]: `SendMessageBatch` with concurrency ([`send::send_bodies`] is the load generator);
//! - [`simulate`]: registering, playing a round on schedule, bursts, and their report;
//! - [`summary`], [`fetch`], [`queues`], [`round`]: reading the outcome back;
//! - [`demo`] (with [`demo_plan`], [`demo_check`], [`demo_report`], [`demo_setup`], [`chaos`],
//!   [`handler_stats`]): `bp-dev demo`, the game played and checked for `scripts/demo`;
//! - [`bench`] (with [`bench_env`], [`bench_parts`], [`bench_proc`], [`bench_report`]): the
//!   benchmark of issue 7, `bp-dev bench` (run it through `scripts/bench`);
//! - [`capacity`]: `bp-dev capacity`, a discrete-event simulation of one round at any scale
//!   (issue 13), and its cross-check against a benchmark run;
//! - [`cli`]: the `bp-dev` command line.

pub mod bench;
pub mod bench_env;
pub mod bench_order;
pub mod bench_parts;
pub mod bench_proc;
pub mod bench_report;
pub mod capacity;
pub mod chaos;
pub mod cli;
pub mod demo;
pub mod demo_check;
pub mod demo_plan;
pub mod demo_report;
pub mod demo_setup;
pub mod fetch;
pub mod handler_stats;
pub mod plan;
pub mod players;
pub mod progress;
pub mod queues;
pub mod round;
pub mod send;
pub mod simulate;
pub mod summary;
