//! AWS clients from the SDK's standard configuration: `AWS_REGION`, the standard credential chain
//! (an instance profile on EC2) and `AWS_ENDPOINT_URL` (LocalStack, moto or another emulator), so
//! one binary talks to AWS or an emulator unchanged.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::result::SdkError;

/// The longest one attempt of an AWS call may take: above SQS's longest long poll (20 s), so a
/// hung connection fails the call (and its retry loop goes on) instead of stalling it for good.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest an AWS call may take with its retries.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(90);

/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Loads the shared SDK configuration from the environment, with [`timeouts`] and without the
/// SDK's stalled-stream protection.
///
/// Stalled-stream protection watches the throughput of request and response bodies, for large
/// uploads and downloads; every body here is a few kilobytes, and a stalled call is already cut
/// by [`ATTEMPT_TIMEOUT`]. Its throughput bookkeeping on every body poll was 3.5 % of the
/// incoming handler's CPU in a burst (`scripts/bench --perf-record`).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .load()
        .await
}

/// The timeouts of every AWS call: [`CONNECT_TIMEOUT`], [`ATTEMPT_TIMEOUT`],
/// [`OPERATION_TIMEOUT`].
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// A one-line description of an SDK error: the service's code and message when it answered,
/// otherwise the transport failure. Never includes request bodies.
pub fn error_text<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_owned(),
                _ => err.to_string(),
            }
        }
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        SdkError::DispatchFailure(d) => {
            if d.is_io() {
                "connection failed (I/O)".to_owned()
            } else if d.is_timeout() {
                "connection timed out".to_owned()
            } else {
                format!(
                    "dispatch failure: {}",
                    aws_smithy_types::error::display::DisplayErrorContext(e)
                )
            }
        }
        SdkError::ResponseError(_) => "unreadable response".to_owned(),
        SdkError::ConstructionFailure(_) => "request could not be built".to_owned(),
        _ => "unknown SDK error".to_owned(),
    }
}

/// The service's error code, if the service answered.
pub fn error_code<E, R>(e: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match e {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}
