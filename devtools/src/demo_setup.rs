//! The demo's own resources, fresh on every run, so that its outcome can be computed from what
//! its players do and nothing else: five queues (`<prefix>-add-user`, `-press`, `-powerup`,
//! `-timestamp`, each with a `-dlq` dead-letter queue as the dev stack makes them, and
//! `-round-hold`, where a round message waits before it is sent on late) and a database with the
//! dev stack's users granted on it. `bp-dev demo-setup` prints the settings as `export` lines.

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use aws_sdk_sqs::types::QueueAttributeName as A;
use clap::Args;

/// Settings of `demo-setup`.
#[derive(Debug, Clone, Args)]
pub struct DemoSetupArgs {
    /// Queue name prefix.
    #[arg(long, default_value = "buttonparty-demo")]
    pub queue_prefix: String,
    /// The demo's database (dropped and created again).
    #[arg(long, default_value = "buttonparty_demo")]
    pub database: String,
    /// A MariaDB URL with the right to create databases and grant on them (the dev stack's
    /// `BUTTONPARTY_TEST_DATABASE_URL`, root on this machine).
    #[arg(
        long,
        env = "BUTTONPARTY_TEST_DATABASE_URL",
        value_name = "BUTTONPARTY_TEST_DATABASE_URL",
        hide_env_values = true
    )]
    pub admin_url: String,
    /// Users granted everything on the database (the handler's).
    #[arg(long, default_value = "buttonparty")]
    pub writer: String,
    /// Users granted SELECT on the database (the fetch API's).
    #[arg(long, default_value = "buttonparty_ro")]
    pub reader: String,
}

const QUEUES: [(&str, &str); 4] = [
    ("BUTTONPARTY_ADD_USER_QUEUE_URL", "add-user"),
    ("BUTTONPARTY_PRESS_QUEUE_URL", "press"),
    ("BUTTONPARTY_POWERUP_QUEUE_URL", "powerup"),
    ("BUTTONPARTY_TIMESTAMP_QUEUE_URL", "timestamp"),
];

fn sqs_err<E>(e: aws_sdk_sqs::error::SdkError<E>) -> anyhow::Error
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    anyhow::anyhow!(buttonparty::aws::error_text(&e))
}

/// Deletes the queue `name` if it exists and creates it again with `attributes`.
async fn fresh_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<A, String>,
) -> anyhow::Result<String> {
    if let Ok(found) = sqs.get_queue_url().queue_name(name).send().await
        && let Some(url) = found.queue_url
    {
        sqs.delete_queue()
            .queue_url(&url)
            .send()
            .await
            .map_err(sqs_err)
            .with_context(|| format!("deleting the queue {name}"))?;
    }
    let url = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .map_err(sqs_err)
        .with_context(|| format!("creating the queue {name}"))?
        .queue_url
        .with_context(|| format!("no URL for the queue {name}"))?;
    Ok(url)
}

/// Creates the demo's queues afresh; returns `(variable, url)` pairs, the holding queue last as
/// `BUTTONPARTY_DEMO_ROUND_HOLD_QUEUE_URL`.
pub async fn create_queues(
    sqs: &aws_sdk_sqs::Client,
    prefix: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (var, short) in QUEUES {
        let name = format!("{prefix}-{short}");
        let dlq = fresh_queue(
            sqs,
            &format!("{name}-dlq"),
            HashMap::from([
                (A::VisibilityTimeout, "30".to_owned()),
                (A::MaximumMessageSize, "262144".to_owned()),
            ]),
        )
        .await?;
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(A::QueueArn)
            .send()
            .await
            .map_err(sqs_err)?
            .attributes
            .and_then(|a| a.get(&A::QueueArn).cloned())
            .context("no ARN for a dead-letter queue")?;
        let redrive = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": 5});
        let url = fresh_queue(
            sqs,
            &name,
            HashMap::from([
                (A::VisibilityTimeout, "30".to_owned()),
                (A::MaximumMessageSize, "8192".to_owned()),
                (A::RedrivePolicy, redrive.to_string()),
            ]),
        )
        .await?;
        out.push((var.to_owned(), url));
    }
    let hold = fresh_queue(sqs, &format!("{prefix}-round-hold"), HashMap::new()).await?;
    out.push(("BUTTONPARTY_DEMO_ROUND_HOLD_QUEUE_URL".to_owned(), hold));
    Ok(out)
}

fn ident(name: &str) -> anyhow::Result<&str> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!("{name:?}: use letters, digits, _ and - only");
    }
    Ok(name)
}

/// Drops and creates the database, and grants it to the users (every host they exist for).
pub async fn create_database(args: &DemoSetupArgs) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let db = ident(&args.database)?;
    let writer = ident(&args.writer)?;
    let reader = ident(&args.reader)?;
    let mut conn = sqlx::MySqlConnection::connect(&args.admin_url)
        .await
        .context("connecting to MariaDB as the administrator (BUTTONPARTY_TEST_DATABASE_URL)")?;
    for sql in [
        format!("DROP DATABASE IF EXISTS `{db}`"),
        format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4"),
    ] {
        // Names checked by `ident`.
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
            .with_context(|| sql.clone())?;
    }
    let hosts: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(User AS CHAR), CAST(Host AS CHAR) FROM mysql.user WHERE User IN (?, ?)",
    )
    .bind(writer)
    .bind(reader)
    .fetch_all(&mut conn)
    .await
    .context("reading the database users")?;
    if !hosts.iter().any(|(u, _)| u == writer) || !hosts.iter().any(|(u, _)| u == reader) {
        bail!("the users {writer} and {reader} do not exist: run scripts/dev-stack up");
    }
    for (user, host) in &hosts {
        let rights = if user == writer {
            "ALL PRIVILEGES"
        } else {
            "SELECT"
        };
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "%._-:".contains(c))
        {
            continue;
        }
        let sql = format!("GRANT {rights} ON `{db}`.* TO '{user}'@'{host}'");
        // Names checked by `ident`, the host just above.
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
            .with_context(|| sql.clone())?;
    }
    let _ = conn.close().await;
    Ok(())
}

/// `bp-dev demo-setup`: fresh queues and database; prints `export VAR=value` lines.
pub async fn run(args: DemoSetupArgs) -> anyhow::Result<()> {
    let sdk = buttonparty::aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queues = create_queues(&sqs, &args.queue_prefix).await?;
    create_database(&args).await?;
    for (var, url) in queues {
        println!("export {var}={url}");
    }
    println!("export BUTTONPARTY_DEMO_DB_NAME={}", args.database);
    Ok(())
}
