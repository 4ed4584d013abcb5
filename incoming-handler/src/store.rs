//! Running a database transaction until it commits: transient errors (deadlock, lock-wait
//! timeout, read-only after a failover, lost connection) are retried with backoff on a fresh
//! connection; access denied re-reads the secret first; while retrying, the database is marked
//! unhealthy so that receivers stop taking new messages. Gives up only at the drain deadline.

use std::future::Future;
use std::sync::Arc;

use buttonparty::backoff::Backoff;
use buttonparty::db::{Database, ErrorClass, classify};
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::stats::Stats;

/// A transaction that did not commit.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The drain deadline passed while the database was unavailable; the messages must be
    /// released, not deleted (retrying later helps).
    #[error("gave up at the drain deadline")]
    Abandoned,
    /// The statement fails for a reason retrying does not fix (a bug or bad data).
    #[error("permanent database error: {0}")]
    Permanent(sqlx::Error),
}

/// Runs transactions with the retry policy above.
#[derive(Debug, Clone)]
pub struct Retrier {
    /// The database.
    pub db: Database,
    /// Shared health flag.
    pub health: Health,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Cancelled at the drain deadline.
    pub hard_stop: CancellationToken,
    /// Delays between attempts.
    pub backoff: Backoff,
}

impl Retrier {
    /// Runs `attempt` until it succeeds, fails permanently, or the drain deadline passes.
    pub async fn run<T, F, Fut>(&self, what: &'static str, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let mut delays = self.backoff.iter();
        let mut failures = 0u32;
        loop {
            // Retrying through an outage is progress of the loop that asked.
            crate::health::tick_current();
            if self.hard_stop.is_cancelled() {
                return Err(StoreError::Abandoned);
            }
            let err = match attempt().await {
                Ok(v) => {
                    if failures > 0 {
                        tracing::info!(
                            what,
                            failures,
                            "database transaction committed after retries"
                        );
                    }
                    self.health.set(true);
                    return Ok(v);
                }
                Err(e) => e,
            };
            failures += 1;
            let class = classify(&err);
            match class {
                ErrorClass::Permanent => {
                    tracing::error!(what, error = %err, "database transaction failed permanently");
                    return Err(StoreError::Permanent(err));
                }
                ErrorClass::AccessDenied => {
                    self.stats.access_denied();
                    self.health.set(false);
                    tracing::warn!(what, error = %err, "database refused the credentials; re-reading the secret");
                    if let Err(e) = self.db.refresh_credentials().await {
                        tracing::warn!(error = %e, "re-reading the database secret failed");
                    }
                }
                ErrorClass::Transient => {
                    let code = buttonparty::db::error_number(&err);
                    // A deadlock or lock wait is contention, not an outage.
                    if !matches!(code, Some(1213 | 1205)) {
                        self.health.set(false);
                    }
                    tracing::warn!(what, attempt = failures, error = %err, "database transaction failed; retrying");
                }
            }
            self.stats.db_retry();
            let delay = delays.next().unwrap_or(self.backoff.max);
            tokio::select! {
                _ = self.hard_stop.cancelled() => return Err(StoreError::Abandoned),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}
