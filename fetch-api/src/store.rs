//! The fetch API's database access: a pool with a short acquire timeout, a deadline on the whole
//! database work of a request, and the sorting of failures into "unavailable" (503) and
//! "failed" (500).
//!
//! The credentials come from the shared [`Database`] (Secrets Manager or a URL); this module
//! builds its own pool from the same connection options so that a database outage answers 503
//! within [`FetchSettings::db_timeout`] instead of after the shared pool's longer timeout. After
//! an access-denied error (a rotated password) it re-reads the secret through [`Database`].

use std::future::Future;
use std::time::Duration;

use buttonparty::db::{self, Database, DbError, ErrorClass};
use buttonparty::settings::DatabaseSettings;
use sqlx::MySqlPool;
use sqlx::mysql::MySqlPoolOptions;

use crate::config::FetchSettings;

/// How long an unused connection stays in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the database work of a request did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or did not answer in time: retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed in a way retrying will not fix (a bug or a schema mismatch).
    #[error("database query failed: {0}")]
    Failed(sqlx::Error),
}

impl StoreError {
    /// Sorts a database error.
    pub fn from_sqlx(e: sqlx::Error) -> Self {
        match db::classify(&e) {
            ErrorClass::Transient | ErrorClass::AccessDenied => Self::Unavailable(e.to_string()),
            ErrorClass::Permanent => Self::Failed(e),
        }
    }
}

/// The database handle shared by every request.
#[derive(Debug, Clone)]
pub struct Store {
    database: Database,
    pool: MySqlPool,
    timeout: Duration,
}

impl Store {
    /// Wraps the shared [`Database`] (whose credentials are already resolved) with the fetch
    /// API's own lazily connecting pool: nothing contacts the database before the first request.
    pub fn new(database: Database, settings: &DatabaseSettings, fetch: &FetchSettings) -> Self {
        let options = (*database.pool().connect_options()).clone();
        let pool = MySqlPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .acquire_timeout(fetch.db_timeout())
            .idle_timeout(IDLE_TIMEOUT)
            .test_before_acquire(true)
            // A `self` answer reads several statements in one read-only transaction: they must
            // share one snapshot whatever the server's (or another pool's) default isolation.
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        Self {
            database,
            pool,
            timeout: fetch.db_timeout(),
        }
    }

    /// [`Store::new`] for settings that need no AWS configuration (`BUTTONPARTY_DATABASE_URL`):
    /// development and tests.
    pub async fn from_url_settings(
        settings: &DatabaseSettings,
        fetch: &FetchSettings,
    ) -> Result<Self, DbError> {
        let database = Database::new(settings, None).await?;
        Ok(Self::new(database, settings, fetch))
    }

    /// The pool (for tests and tools).
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The deadline of the database work of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs the database work of one request under the deadline. An access-denied answer makes
    /// the next connections use freshly read credentials (at most once per
    /// [`db::MIN_SECRET_REFRESH`]).
    pub async fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(MySqlPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        match tokio::time::timeout(self.timeout, work(self.pool.clone())).await {
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if db::classify(&e) == ErrorClass::AccessDenied {
                    self.refresh_credentials().await;
                }
                Err(StoreError::from_sqlx(e))
            }
        }
    }

    async fn refresh_credentials(&self) {
        match self.database.refresh_credentials().await {
            Ok(true) => {
                let options = (*self.database.pool().connect_options()).clone();
                self.pool.set_connect_options(options);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "re-reading the database credentials failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_unavailable_and_bugs_are_failures() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            StoreError::from_sqlx(io),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            StoreError::from_sqlx(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            StoreError::from_sqlx(sqlx::Error::RowNotFound),
            StoreError::Failed(_)
        ));
    }
}
