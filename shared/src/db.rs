//! The database connection: credentials from Secrets Manager (the RDS secret shape) or a URL, a
//! lazily connecting pool, the embedded migrations, and the classification of errors into "retry",
//! "re-read the credentials and retry" and "give up".

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlSslMode};
use tokio::sync::Mutex;

use crate::settings::{ConfigError, DatabaseSettings, DatabaseSource};

/// The schema migrations of `migrations/`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The shortest time between two reads of the secret, so that a wrong password cannot turn into a
/// hot loop of Secrets Manager calls.
pub const MIN_SECRET_REFRESH: Duration = Duration::from_secs(1);

/// Something went wrong obtaining or using the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The settings cannot describe a connection.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Secrets Manager did not answer or refused (retry may help).
    #[error("reading secret {secret_id}: {message}")]
    Secret {
        /// The secret id.
        secret_id: String,
        /// The SDK error (never contains the secret's value).
        message: String,
    },
    /// The secret's value is not the RDS JSON shape (retry does not help until it is fixed).
    #[error("secret {secret_id} is not RDS secret JSON: {reason}")]
    SecretShape {
        /// The secret id.
        secret_id: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// A database error.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl DbError {
    /// Whether trying again later can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            DbError::Config(_) | DbError::SecretShape { .. } => false,
            DbError::Secret { .. } => true,
            DbError::Sql(e) => classify(e) != ErrorClass::Permanent,
            DbError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => {
                classify(e) != ErrorClass::Permanent
            }
            DbError::Migrate(_) => false,
        }
    }
}

/// What a caller should do about a database error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Deadlock, lock-wait timeout, read-only (failover), lost connection, pool timeout: retry the
    /// whole transaction on a fresh connection after a backoff.
    Transient,
    /// Access denied (1045): the password was probably rotated; re-read the secret, then retry.
    AccessDenied,
    /// A bug or bad data: retrying the same statement will fail the same way.
    Permanent,
}

/// MySQL/MariaDB server error numbers that mean "try again".
const TRANSIENT_CODES: &[u16] = &[
    1040, // too many connections
    1053, // server shutdown in progress
    1205, // lock wait timeout
    1213, // deadlock
    1290, // --read-only (Aurora failover)
    1792, // read-only transaction
    1836, // read-only mode
    1927, // connection killed (MariaDB)
    2002, 2003, 2006, 2013, // connection errors, server gone
    3024, // max execution time exceeded
    4031, // disconnected by the server (idle)
];

/// The server error number of a database error, if it is one.
pub fn error_number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()
        .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .map(|m| m.number())
}

/// Classifies a database error; see [`ErrorClass`].
pub fn classify(e: &sqlx::Error) -> ErrorClass {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => ErrorClass::Transient,
        sqlx::Error::Database(_) => match error_number(e) {
            Some(1045) => ErrorClass::AccessDenied,
            Some(n) if TRANSIENT_CODES.contains(&n) => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        },
        _ => ErrorClass::Permanent,
    }
}

/// Credentials and address of the database, from the RDS secret shape.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password (never printed).
    pub password: SecretString,
    /// Host, when the secret has one.
    pub host: Option<String>,
    /// Port, when the secret has one.
    pub port: Option<u16>,
    /// Database name, when the secret has one.
    pub dbname: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .finish()
    }
}

impl Credentials {
    /// Parses the RDS secret JSON: `username`, `password`, optional `host`, `port` (number or
    /// string), `dbname`. Errors name the field, never a value.
    pub fn from_secret_json(json: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|_| "the value is not JSON".to_string())?;
        let obj = v.as_object().ok_or("the value is not a JSON object")?;
        let text = |k: &str| obj.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let username = text("username").ok_or("missing string field `username`")?;
        let password = text("password").ok_or("missing string field `password`")?;
        let port = match obj.get("port") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or("field `port` is not a port number")?,
            ),
            Some(serde_json::Value::String(s)) => {
                Some(s.parse().map_err(|_| "field `port` is not a port number")?)
            }
            Some(_) => return Err("field `port` is not a port number".into()),
        };
        Ok(Self {
            username,
            password: SecretString::from(password),
            host: text("host"),
            port,
            dbname: text("dbname"),
        })
    }
}

/// Reads the database credentials from Secrets Manager.
pub async fn fetch_secret(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<Credentials, DbError> {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| DbError::Secret {
            secret_id: secret_id.to_owned(),
            message: crate::aws::error_text(&e),
        })?;
    let json = out.secret_string().ok_or_else(|| DbError::SecretShape {
        secret_id: secret_id.to_owned(),
        reason: "the secret has no string value".into(),
    })?;
    Credentials::from_secret_json(json).map_err(|reason| DbError::SecretShape {
        secret_id: secret_id.to_owned(),
        reason,
    })
}

fn connect_options(
    settings: &DatabaseSettings,
    creds: &Credentials,
) -> Result<MySqlConnectOptions, DbError> {
    let host =
        creds
            .host
            .clone()
            .or_else(|| settings.host.clone())
            .ok_or(ConfigError::Missing {
                var: "BUTTONPARTY_DB_HOST",
                flag: "db-host (the secret has no host)",
            })?;
    let opts = MySqlConnectOptions::new()
        .host(&host)
        .port(creds.port.unwrap_or(settings.port))
        .username(&creds.username)
        .password(creds.password.expose_secret())
        .database(creds.dbname.as_deref().unwrap_or(&settings.name))
        .ssl_mode(ssl_mode(&settings.ssl_mode)?)
        .charset("utf8mb4");
    Ok(with_ssl_ca(opts, settings)?)
}

/// `opts` with the CA bundle of `BUTTONPARTY_DB_SSL_CA`, when set; the file must be readable.
fn with_ssl_ca(
    opts: MySqlConnectOptions,
    settings: &DatabaseSettings,
) -> Result<MySqlConnectOptions, ConfigError> {
    let Some(ca) = &settings.ssl_ca else {
        return Ok(opts);
    };
    std::fs::metadata(ca)
        .ok()
        .filter(std::fs::Metadata::is_file)
        .ok_or_else(|| ConfigError::Invalid {
            var: "BUTTONPARTY_DB_SSL_CA",
            reason: format!("{} is not a readable file", ca.display()),
        })?;
    Ok(opts.ssl_ca(ca))
}

fn ssl_mode(s: &str) -> Result<MySqlSslMode, ConfigError> {
    MySqlSslMode::from_str(s).map_err(|_| ConfigError::Invalid {
        var: "BUTTONPARTY_DB_SSL_MODE",
        reason: "expected disabled, preferred, required, verify-ca or verify-identity".into(),
    })
}

/// A pool of database connections that can re-read its credentials after a password rotation.
#[derive(Clone)]
pub struct Database {
    pool: MySqlPool,
    inner: Arc<Inner>,
}

struct Inner {
    settings: DatabaseSettings,
    source: DatabaseSource,
    secrets: Option<aws_sdk_secretsmanager::Client>,
    last_refresh: Mutex<Option<Instant>>,
    secret_reads: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Builds a lazily connecting pool. Reads the secret once (so this fails when Secrets Manager
    /// is unreachable: retry with backoff); does not contact the database.
    pub async fn new(
        settings: &DatabaseSettings,
        aws: Option<&aws_config::SdkConfig>,
    ) -> Result<Self, DbError> {
        let source = settings.source()?;
        let secrets = match (&source, aws) {
            (DatabaseSource::Secret { .. }, Some(cfg)) => {
                Some(aws_sdk_secretsmanager::Client::new(cfg))
            }
            (DatabaseSource::Secret { .. }, None) => {
                return Err(ConfigError::Invalid {
                    var: "BUTTONPARTY_DB_SECRET_ID",
                    reason: "no AWS configuration to read the secret with".into(),
                }
                .into());
            }
            (DatabaseSource::Url(_), _) => None,
        };
        let opts = Self::load_options(settings, &source, secrets.as_ref()).await?;
        let secrets_read = secrets.is_some();
        let pool = MySqlPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(300))
            // REPEATABLE READ, whatever the server's default: the incoming handler's fold relies
            // on its gap and next-key locks. A locking read of a player with no row locks the
            // gap, which holds off that name's registration until the batch that stored its
            // pending events commits; a locked range of rounds holds off a round announced
            // meanwhile until the batch that judged without it commits (and then marks its
            // players for a re-fold). READ COMMITTED takes neither.
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_lazy_with(opts);
        Ok(Self {
            pool,
            inner: Arc::new(Inner {
                settings: settings.clone(),
                source,
                secrets,
                last_refresh: Mutex::new(Some(Instant::now())),
                secret_reads: std::sync::atomic::AtomicU64::new(u64::from(secrets_read)),
            }),
        })
    }

    async fn load_options(
        settings: &DatabaseSettings,
        source: &DatabaseSource,
        secrets: Option<&aws_sdk_secretsmanager::Client>,
    ) -> Result<MySqlConnectOptions, DbError> {
        match source {
            DatabaseSource::Url(url) => {
                let opts = MySqlConnectOptions::from_str(url.expose_secret()).map_err(|_| {
                    ConfigError::Invalid {
                        var: "BUTTONPARTY_DATABASE_URL",
                        reason: "not a valid mysql:// URL".into(),
                    }
                })?;
                Ok(with_ssl_ca(opts.charset("utf8mb4"), settings)?)
            }
            DatabaseSource::Secret { secret_id } => {
                let client = secrets.expect("a secrets client exists for a secret source");
                let creds = fetch_secret(client, secret_id).await?;
                connect_options(settings, &creds)
            }
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Where the credentials come from.
    pub fn source(&self) -> &DatabaseSource {
        &self.inner.source
    }

    /// After an access-denied error: re-reads the secret (at most once per
    /// [`MIN_SECRET_REFRESH`]) and makes new connections use it. Returns whether it re-read.
    pub async fn refresh_credentials(&self) -> Result<bool, DbError> {
        if !matches!(self.inner.source, DatabaseSource::Secret { .. }) {
            return Ok(false);
        }
        let mut last = self.inner.last_refresh.lock().await;
        if last.is_some_and(|t| t.elapsed() < MIN_SECRET_REFRESH) {
            return Ok(false);
        }
        *last = Some(Instant::now());
        let opts = Self::load_options(
            &self.inner.settings,
            &self.inner.source,
            self.inner.secrets.as_ref(),
        )
        .await?;
        self.inner
            .secret_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pool.set_connect_options(opts);
        tracing::info!("database credentials re-read from Secrets Manager");
        Ok(true)
    }

    /// How many times the secret has been read (start-up included).
    pub fn secret_reads(&self) -> u64 {
        self.inner
            .secret_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Checks that the database answers (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), DbError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_bundle_must_be_a_readable_file() {
        let dir = std::env::temp_dir();
        let ca = dir.join(format!("bp-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let mut settings = DatabaseSettings::from_url("mysql://u@h/x");
        let opts = MySqlConnectOptions::new();
        assert!(
            with_ssl_ca(opts.clone(), &settings).is_ok(),
            "unset: nothing to check"
        );
        settings.ssl_ca = Some(ca.clone());
        assert!(with_ssl_ca(opts.clone(), &settings).is_ok());
        settings.ssl_ca = Some(dir.join("no-such-bundle.pem"));
        let e = with_ssl_ca(opts.clone(), &settings).unwrap_err();
        assert!(e.to_string().contains("BUTTONPARTY_DB_SSL_CA"), "{e}");
        settings.ssl_ca = Some(dir);
        assert!(
            with_ssl_ca(opts, &settings).is_err(),
            "a directory is no bundle"
        );
        let _ = std::fs::remove_file(ca);
    }

    #[test]
    fn rds_secret_shape_parses() {
        let c = Credentials::from_secret_json(
            r#"{"engine":"mysql","username":"bp","password":"sentinel-pw","host":"db","port":"3307","dbname":"x"}"#,
        )
        .unwrap();
        assert_eq!(c.username, "bp");
        assert_eq!(c.port, Some(3307));
        assert_eq!(c.host.as_deref(), Some("db"));
        assert!(!format!("{c:?}").contains("sentinel-pw"));
    }

    #[test]
    fn secret_without_optional_fields_parses() {
        let c = Credentials::from_secret_json(r#"{"username":"bp","password":"p"}"#).unwrap();
        assert_eq!(c.port, None);
        assert_eq!(c.dbname, None);
    }

    #[test]
    fn bad_secret_errors_never_contain_values() {
        for json in [
            r#"{"username":"bp"}"#,
            r#"{"password":"sentinel-pw"}"#,
            r#"{"username":"bp","password":"sentinel-pw","port":"x"}"#,
            "sentinel-pw",
        ] {
            let e = Credentials::from_secret_json(json).unwrap_err();
            assert!(!e.contains("sentinel-pw"), "{e}");
        }
    }

    #[test]
    fn host_falls_back_to_settings() {
        let mut s = DatabaseSettings::from_url("mysql://x@y/z");
        s.host = Some("fallback".into());
        let creds = Credentials::from_secret_json(r#"{"username":"u","password":"p"}"#).unwrap();
        let o = connect_options(&s, &creds).unwrap();
        assert_eq!(o.get_host(), "fallback");
        assert_eq!(o.get_port(), 3306);
        assert_eq!(o.get_database(), Some("buttonparty"));
    }

    #[test]
    fn missing_host_names_the_variable() {
        let s = DatabaseSettings::from_url("mysql://x@y/z");
        let creds = Credentials::from_secret_json(r#"{"username":"u","password":"p"}"#).unwrap();
        let e = connect_options(&s, &creds).unwrap_err();
        assert!(e.to_string().contains("BUTTONPARTY_DB_HOST"));
    }

    #[test]
    fn io_errors_are_transient() {
        let e = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(classify(&e), ErrorClass::Transient);
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), ErrorClass::Transient);
        assert_eq!(classify(&sqlx::Error::RowNotFound), ErrorClass::Permanent);
    }
}
