//! Test support (feature `testing`): a fresh, migrated database per test and the dev stack's
//! settings. Integration tests run through `scripts/test`, which brings up MariaDB and LocalStack
//! and exports their coordinates; a missing variable fails the test with a hint rather than
//! skipping it.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::mysql::MySqlPool;
use sqlx::{AssertSqlSafe, Connection};

use crate::settings::DatabaseSettings;

/// The value of a dev-stack variable, or a panic that says how to run the tests.
pub fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through scripts/test (it starts the dev stack and exports its settings)")
    })
}

/// A database created for one test, with the migrations applied.
#[derive(Debug)]
pub struct TestDb {
    /// Database name (`bp_test_…`).
    pub name: String,
    /// URL of the database, root user.
    pub url: String,
    /// A pool on it.
    pub pool: MySqlPool,
    admin_url: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    /// Creates `bp_test_<pid>_<n>_<random>` on the server of `BUTTONPARTY_TEST_DATABASE_URL` and
    /// migrates it.
    pub async fn new() -> Self {
        Self::migrated_to(None).await
    }

    /// [`TestDb::new`], with the migrations up to `version` only (`None`: all of them), to test
    /// an upgrade.
    pub async fn migrated_to(version: Option<i64>) -> Self {
        let admin_url = env("BUTTONPARTY_TEST_DATABASE_URL");
        let admin_url = admin_url.trim_end_matches('/').to_owned();
        let name = format!(
            "bp_test_{}_{}_{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let mut conn = sqlx::MySqlConnection::connect(&admin_url)
            .await
            .expect("connect to the test database server");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = format!("{admin_url}/{name}");
        let pool = MySqlPool::connect(&url)
            .await
            .expect("connect to test database");
        match version {
            None => crate::db::MIGRATOR.run(&pool).await,
            Some(v) => crate::db::MIGRATOR.run_to(v, &pool).await,
        }
        .expect("migrate test database");
        Self {
            name,
            url,
            pool,
            admin_url,
        }
    }

    /// Database settings pointing at this database.
    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings::from_url(&self.url)
    }

    /// Drops the database.
    pub async fn drop_db(self) {
        self.pool.close().await;
        if let Ok(mut conn) = sqlx::MySqlConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS `{}`",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// SDK configuration for the emulator of the dev stack (`AWS_ENDPOINT_URL` must be set).
pub async fn aws_config() -> aws_config::SdkConfig {
    env("AWS_ENDPOINT_URL");
    crate::aws::sdk_config().await
}

/// A unique suffix for per-test resource names.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}-{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// A queue created for one test, with its dead-letter queue (redrive after `max_receive_count`
/// receives), as the dev stack creates them.
#[derive(Debug, Clone)]
pub struct TestQueue {
    /// Queue URL.
    pub url: String,
    /// Dead-letter queue URL.
    pub dlq_url: String,
}

impl TestQueue {
    /// Creates `<name>` and `<name>-dlq` with the given visibility timeout (seconds).
    pub async fn new(
        sqs: &aws_sdk_sqs::Client,
        name: &str,
        visibility_secs: u32,
        max_receive_count: u32,
    ) -> Self {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let dlq_url = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .attributes(A::MessageRetentionPeriod, "1209600")
            .send()
            .await
            .expect("create dlq")
            .queue_url
            .expect("dlq url");
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(A::QueueArn)
            .send()
            .await
            .expect("dlq attributes")
            .attributes
            .and_then(|mut a| a.remove(&A::QueueArn))
            .expect("dlq arn");
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": max_receive_count.to_string(),
        })
        .to_string();
        let url = sqs
            .create_queue()
            .queue_name(name)
            .attributes(A::VisibilityTimeout, visibility_secs.to_string())
            .attributes(A::MessageRetentionPeriod, "345600")
            .attributes(A::MaximumMessageSize, "8192")
            .attributes(A::RedrivePolicy, redrive)
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue url");
        Self { url, dlq_url }
    }

    /// Sends one message body.
    pub async fn send(&self, sqs: &aws_sdk_sqs::Client, body: &str) {
        sqs.send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .expect("send message");
    }

    /// Number of messages visible + in flight + delayed, from the queue attributes (approximate
    /// counts, exact on an idle emulator).
    pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::All)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap_or_default();
        [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
            A::ApproximateNumberOfMessagesDelayed,
        ]
        .iter()
        .map(|k| {
            attrs
                .get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
    }

    /// Deletes both queues.
    pub async fn delete(&self, sqs: &aws_sdk_sqs::Client) {
        let _ = sqs.delete_queue().queue_url(&self.url).send().await;
        let _ = sqs.delete_queue().queue_url(&self.dlq_url).send().await;
    }
}

/// Creates a topic and a GCM platform application for one test; returns (topic ARN, platform
/// application ARN).
pub async fn topic_and_platform_app(sns: &aws_sdk_sns::Client, name: &str) -> (String, String) {
    let topic = sns
        .create_topic()
        .name(name)
        .send()
        .await
        .expect("create topic")
        .topic_arn
        .expect("topic arn");
    let app = sns
        .create_platform_application()
        .name(name)
        .platform("GCM")
        .attributes("PlatformCredential", "test-fcm-credential")
        .attributes("PlatformPrincipal", "test-fcm-principal")
        .send()
        .await
        .expect("create platform application")
        .platform_application_arn
        .expect("platform application arn");
    (topic, app)
}
