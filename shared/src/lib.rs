//! ButtonParty shared library: the game rules, the queue messages and the infrastructure pieces
//! (settings, telemetry, shutdown, backoff, database, AWS clients) that every binary uses.

pub mod fold;
pub mod messages;
pub mod rules;

pub mod aws;
pub mod backoff;
pub mod db;
pub mod emf;
pub mod notify;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

#[cfg(feature = "testing")]
pub mod testing;
