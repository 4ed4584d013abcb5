//! The three SQS calls a burst makes for every ten presses — `ReceiveMessage`,
//! `DeleteMessageBatch` and (heartbeat, release) `ChangeMessageVisibilityBatch` — sent straight
//! over HTTP/1.1 in SQS's JSON protocol (`application/x-amz-json-1.0`, the protocol the SDK
//! speaks), signed with SigV4 by `aws-sigv4` (the SDK's own signer) with the SDK's credentials
//! provider and region. Every other SQS call (queue discovery, dead-letter copies) goes through
//! the SDK.
//!
//! Why not the SDK for these: a burst makes two of them per ten presses, and the SDK's request
//! pipeline (configuration layers, interceptors, endpoint and identity resolution, the
//! user-agent header, retry bookkeeping) was over half of the handler's CPU in a profile of
//! `scripts/bench` (README, Performance). This client keeps what the calls need: signing, a
//! kept-alive connection pool (rustls for `https`, plain TCP for an emulator's `http`), the
//! attempt and connect timeouts of [`buttonparty::aws`], and a short retry of transient
//! failures, as the SDK's standard retry mode does.
//!
//! Requests go where the SDK sends them: to the endpoint configured by `AWS_ENDPOINT_URL_SQS` or
//! `AWS_ENDPOINT_URL` (an emulator, a VPC endpoint) unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`
//! is true, otherwise to the origin of the queue URL (`https://sqs.<region>.amazonaws.com/…` on
//! AWS).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::config::{Credentials, ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use buttonparty::aws::{ATTEMPT_TIMEOUT, CONNECT_TIMEOUT};
use buttonparty::backoff::Backoff;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// Attempts per call (the SDK's standard retry mode makes three).
const ATTEMPTS: u32 = 3;

/// Credentials are refreshed this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// A call failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// No connection, or it broke; retrying can help.
    #[error("connection failed: {0}")]
    Transport(String),
    /// No answer within the attempt timeout; retrying can help.
    #[error("timed out")]
    Timeout,
    /// The service answered with an error.
    #[error("{code}: {message}")]
    Service {
        /// HTTP status.
        status: u16,
        /// The error code (`QueueDoesNotExist`, `ThrottlingException`, …).
        code: String,
        /// The service's message.
        message: String,
    },
    /// An answer that is not what SQS sends.
    #[error("unreadable response: {0}")]
    Response(String),
    /// The credentials provider failed; retrying can help (instance metadata may be back).
    #[error("no credentials: {0}")]
    Credentials(String),
    /// The request could not be signed or built (bad region or URL); retrying does not help.
    #[error("request could not be built: {0}")]
    Build(String),
}

impl WireError {
    /// Whether retrying later can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            WireError::Transport(_)
            | WireError::Timeout
            | WireError::Response(_)
            | WireError::Credentials(_) => true,
            WireError::Build(_) => false,
            WireError::Service { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || code.contains("Throttl")
                    || code.contains("RequestThrottled")
                    || code == "KmsThrottled"
            }
        }
    }
}

/// The client: one per process, shared by every queue.
#[derive(Clone)]
pub struct SqsWire {
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The configured endpoint, if any (else each queue URL's origin).
    endpoint: Option<http::Uri>,
    region: String,
    credentials: SharedCredentialsProvider,
    cached: std::sync::Arc<tokio::sync::Mutex<Option<Credentials>>>,
    retry: Backoff,
}

impl fmt::Debug for SqsWire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsWire")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl SqsWire {
    /// A client with the region of the SDK client `sdk` and the SDK's default credentials chain
    /// (environment, profile, web identity, ECS, EC2 instance profile), as
    /// [`buttonparty::aws::sdk_config`] loads them.
    pub async fn from_sdk(sdk: &aws_sdk_sqs::Client) -> Result<Self, WireError> {
        let region = sdk
            .config()
            .region()
            .cloned()
            .ok_or_else(|| WireError::Build("no AWS region configured (AWS_REGION)".into()))?;
        let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
            .region(region.clone())
            .build()
            .await;
        let mut wire = Self::new(region.to_string(), SharedCredentialsProvider::new(chain));
        wire.endpoint = configured_endpoint(|name| std::env::var(name).ok())?;
        Ok(wire)
    }

    /// A client for `region` with `credentials`.
    pub fn new(region: String, credentials: SharedCredentialsProvider) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let tls = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(b) => b,
            Err(e) => {
                // An emulator over plain HTTP still works; an https queue will fail to connect,
                // each time saying why.
                tracing::warn!(error = %e, "no system CA certificates: https queue URLs will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider.into())
                    .with_safe_default_protocol_versions()
                    .expect("the provider supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            http,
            endpoint: None,
            region,
            credentials,
            cached: Default::default(),
            retry: Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
        }
    }

    /// Long-polls `queue_url` for up to `max` messages (1–10), waiting up to `wait_secs`, with
    /// the `SentTimestamp` and `ApproximateReceiveCount` system attributes and the message
    /// attributes named in `attribute_names`.
    pub async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        wait_secs: i32,
        attribute_names: &[&str],
    ) -> Result<Vec<WireMessage>, WireError> {
        let body = ReceiveIn {
            queue_url,
            max_number_of_messages: max,
            wait_time_seconds: wait_secs,
            message_system_attribute_names: &["SentTimestamp", "ApproximateReceiveCount"],
            message_attribute_names: attribute_names,
        };
        let out: ReceiveOut = self.call(queue_url, "ReceiveMessage", &body).await?;
        Ok(out.messages)
    }

    /// `DeleteMessageBatch` of up to ten receipt handles; the entries' ids are their indexes.
    pub async fn delete_batch(
        &self,
        queue_url: &str,
        receipts: &[&str],
    ) -> Result<BatchOut, WireError> {
        self.batch(queue_url, "DeleteMessageBatch", receipts, None)
            .await
    }

    /// `ChangeMessageVisibilityBatch` of up to ten receipt handles to `timeout_secs`; the
    /// entries' ids are their indexes.
    pub async fn change_visibility_batch(
        &self,
        queue_url: &str,
        receipts: &[&str],
        timeout_secs: i32,
    ) -> Result<BatchOut, WireError> {
        self.batch(
            queue_url,
            "ChangeMessageVisibilityBatch",
            receipts,
            Some(timeout_secs),
        )
        .await
    }

    /// A batch call of `operation` over `receipts`, each entry with `visibility_timeout` if set.
    async fn batch(
        &self,
        queue_url: &str,
        operation: &'static str,
        receipts: &[&str],
        visibility_timeout: Option<i32>,
    ) -> Result<BatchOut, WireError> {
        let ids: Vec<String> = (0..receipts.len()).map(|i| i.to_string()).collect();
        let entries: Vec<Entry<'_>> = receipts
            .iter()
            .zip(&ids)
            .map(|(r, id)| Entry {
                id,
                receipt_handle: r,
                visibility_timeout,
            })
            .collect();
        let body = BatchIn { queue_url, entries };
        self.call(queue_url, operation, &body).await
    }

    /// One call, retried (with backoff) while the failure is retryable, up to [`ATTEMPTS`].
    async fn call<I: Serialize, O: for<'de> Deserialize<'de>>(
        &self,
        queue_url: &str,
        operation: &'static str,
        input: &I,
    ) -> Result<O, WireError> {
        let body =
            Bytes::from(serde_json::to_vec(input).map_err(|e| WireError::Build(e.to_string()))?);
        let uri = match &self.endpoint {
            Some(e) => e.clone(),
            None => endpoint_of(queue_url)?,
        };
        let mut delays = self.retry.iter();
        let mut attempt = 1;
        loop {
            let result = self.attempt(&uri, operation, body.clone()).await;
            match result {
                Ok(bytes) => {
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| WireError::Response(format!("{operation}: {e}")));
                }
                Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                    tracing::debug!(operation, attempt, error = %e, "SQS call failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(delays.next().unwrap_or_default()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One signed request within [`ATTEMPT_TIMEOUT`]; the body of a 200 answer.
    async fn attempt(
        &self,
        uri: &http::Uri,
        operation: &'static str,
        body: Bytes,
    ) -> Result<Bytes, WireError> {
        let credentials = self.credentials().await?;
        let identity: Identity = credentials.into();
        let target = format!("AmazonSQS.{operation}");
        let target = target.as_str();
        let mut request = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .header("x-amz-target", target)
            .body(Full::new(body.clone()))
            .map_err(|e| WireError::Build(e.to_string()))?;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("sqs")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| WireError::Build(e.to_string()))?
            .into();
        let uri_text = uri.to_string();
        let signable = SignableRequest::new(
            "POST",
            &uri_text,
            [
                (http::header::CONTENT_TYPE.as_str(), CONTENT_TYPE),
                ("x-amz-target", target),
            ]
            .into_iter(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| WireError::Build(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| WireError::Build(e.to_string()))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        // Hop-by-hop, after signing: LocalStack closes the connection after each answer unless
        // asked to keep it (HTTP/1.1's default), which would cost a handshake per request.
        request.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("keep-alive"),
        );
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| WireError::Transport(transport_text(&e)))?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| WireError::Transport(e.to_string()))?
                .to_bytes();
            Ok::<_, WireError>((parts, bytes))
        };
        let (parts, bytes) = tokio::time::timeout(ATTEMPT_TIMEOUT, exchange)
            .await
            .map_err(|_| WireError::Timeout)??;
        if parts.status.is_success() {
            Ok(bytes)
        } else {
            Err(service_error(parts.status.as_u16(), &parts.headers, &bytes))
        }
    }

    /// The credentials, from the cache unless they expire within [`REFRESH_BEFORE_EXPIRY`].
    async fn credentials(&self) -> Result<Credentials, WireError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c.expiry().is_none_or(|at| {
                at.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > REFRESH_BEFORE_EXPIRY)
            });
            if fresh {
                return Ok(c.clone());
            }
        }
        match self.credentials.provide_credentials().await {
            Ok(c) => {
                *cached = Some(c.clone());
                Ok(c)
            }
            // Refreshing early failed: the cached credentials serve until they expire.
            Err(e) => match cached.as_ref() {
                Some(c) if c.expiry().is_some_and(|at| at > SystemTime::now()) => {
                    tracing::warn!(error = %e, "could not refresh AWS credentials; using the current ones until they expire");
                    Ok(c.clone())
                }
                _ => Err(WireError::Credentials(e.to_string())),
            },
        }
    }
}

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// The SQS endpoint configured in the environment the way the SDK reads it: the service-specific
/// `AWS_ENDPOINT_URL_SQS`, then `AWS_ENDPOINT_URL`; none when
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is true. (The SDK also reads `endpoint_url` from a
/// shared config profile; set the variable instead when using that.)
fn configured_endpoint(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<http::Uri>, WireError> {
    if var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let url = ["AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL"]
        .into_iter()
        .filter_map(&var)
        .find(|v| !v.trim().is_empty());
    url.map(|u| endpoint_of(u.trim())).transpose()
}

/// `scheme://authority/` of a queue URL (or of an endpoint URL).
fn endpoint_of(queue_url: &str) -> Result<http::Uri, WireError> {
    let url: http::Uri = queue_url
        .parse()
        .map_err(|e| WireError::Build(format!("queue URL {queue_url:?}: {e}")))?;
    let (Some(scheme), Some(authority)) = (url.scheme(), url.authority()) else {
        return Err(WireError::Build(format!(
            "queue URL {queue_url:?} has no scheme or host"
        )));
    };
    http::Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| WireError::Build(e.to_string()))
}

/// A transport error with its causes (hyper's own text is only "client error (Connect)").
fn transport_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The error of a non-2xx answer: the code from `x-amzn-query-error` (`Code;Sender`) or the
/// body's `__type` (`namespace#Code`), and the body's message.
fn service_error(status: u16, headers: &http::HeaderMap, body: &[u8]) -> WireError {
    #[derive(Deserialize, Default)]
    struct ErrorBody {
        #[serde(rename = "__type", default)]
        kind: Option<String>,
        #[serde(default, alias = "Message")]
        message: Option<String>,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = headers
        .get("x-amzn-query-error")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            parsed
                .kind
                .as_deref()
                .map(|k| k.rsplit('#').next().unwrap_or(k).to_owned())
        })
        .unwrap_or_else(|| format!("HTTP {status}"));
    WireError::Service {
        status,
        code,
        message: parsed.message.unwrap_or_default(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveIn<'a> {
    queue_url: &'a str,
    max_number_of_messages: i32,
    wait_time_seconds: i32,
    message_system_attribute_names: &'a [&'a str],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    message_attribute_names: &'a [&'a str],
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveOut {
    #[serde(default)]
    messages: Vec<WireMessage>,
}

/// A message as `ReceiveMessage` returns it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireMessage {
    /// The message id.
    pub message_id: Option<String>,
    /// This delivery's receipt handle.
    pub receipt_handle: Option<String>,
    /// The body.
    pub body: Option<String>,
    /// System attributes asked for (`SentTimestamp`, `ApproximateReceiveCount`).
    #[serde(default)]
    pub attributes: HashMap<String, String>,
    /// Message attributes asked for.
    #[serde(default)]
    pub message_attributes: HashMap<String, WireAttribute>,
}

impl fmt::Debug for WireMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireMessage")
            .field("message_id", &self.message_id)
            .finish_non_exhaustive()
    }
}

/// A message attribute's value.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireAttribute {
    /// Set for `String` and `Number` attributes.
    pub string_value: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BatchIn<'a> {
    queue_url: &'a str,
    entries: Vec<Entry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Entry<'a> {
    id: &'a str,
    receipt_handle: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    visibility_timeout: Option<i32>,
}

/// What a batch call did.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchOut {
    /// Entries that succeeded.
    #[serde(default)]
    pub successful: Vec<BatchOk>,
    /// Entries that failed.
    #[serde(default)]
    pub failed: Vec<BatchFailed>,
}

/// A successful batch entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchOk {
    /// The entry's id (its index in the request).
    pub id: String,
}

/// A failed batch entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchFailed {
    /// The entry's id (its index in the request).
    pub id: String,
    /// The error code (`ReceiptHandleIsInvalid`, …).
    #[serde(default)]
    pub code: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_queue_urls_origin() {
        assert_eq!(
            endpoint_of("https://sqs.eu-west-1.amazonaws.com/123456789012/press").unwrap(),
            "https://sqs.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            endpoint_of("http://127.0.0.1:4566/000000000000/press").unwrap(),
            "http://127.0.0.1:4566/"
        );
        assert!(matches!(
            endpoint_of("press-queue"),
            Err(WireError::Build(_))
        ));
    }

    #[test]
    fn a_configured_endpoint_wins_as_in_the_sdk() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(configured_endpoint(env(&[])).unwrap(), None);
        assert_eq!(
            configured_endpoint(env(&[("AWS_ENDPOINT_URL", "http://localhost:4566")]))
                .unwrap()
                .unwrap(),
            "http://localhost:4566/"
        );
        assert_eq!(
            configured_endpoint(env(&[
                ("AWS_ENDPOINT_URL", "http://localhost:4566"),
                (
                    "AWS_ENDPOINT_URL_SQS",
                    "https://vpce-1.sqs.us-east-1.vpce.amazonaws.com"
                )
            ]))
            .unwrap()
            .unwrap(),
            "https://vpce-1.sqs.us-east-1.vpce.amazonaws.com/"
        );
        assert_eq!(
            configured_endpoint(env(&[
                ("AWS_ENDPOINT_URL", "http://localhost:4566"),
                ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
            ]))
            .unwrap(),
            None
        );
        assert!(configured_endpoint(env(&[("AWS_ENDPOINT_URL", "not a url")])).is_err());
    }

    #[test]
    fn requests_are_sqs_json() {
        let body = serde_json::to_value(ReceiveIn {
            queue_url: "u",
            max_number_of_messages: 10,
            wait_time_seconds: 20,
            message_system_attribute_names: &["SentTimestamp"],
            message_attribute_names: &[],
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"QueueUrl": "u", "MaxNumberOfMessages": 10, "WaitTimeSeconds": 20,
                "MessageSystemAttributeNames": ["SentTimestamp"]})
        );
        let body = serde_json::to_value(BatchIn {
            queue_url: "u",
            entries: vec![Entry {
                id: "0",
                receipt_handle: "r",
                visibility_timeout: Some(0),
            }],
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"QueueUrl": "u", "Entries": [{"Id": "0", "ReceiptHandle": "r", "VisibilityTimeout": 0}]})
        );
    }

    #[test]
    fn answers_parse() {
        let out: ReceiveOut = serde_json::from_str(
            r#"{"Messages":[{"MessageId":"m","ReceiptHandle":"r","MD5OfBody":"x","Body":"{}",
                "Attributes":{"SentTimestamp":"1700000000000","ApproximateReceiveCount":"2"},
                "MessageAttributes":{"sub":{"StringValue":"alice","DataType":"String"}}}]}"#,
        )
        .unwrap();
        let m = &out.messages[0];
        assert_eq!(m.message_id.as_deref(), Some("m"));
        assert_eq!(m.attributes["ApproximateReceiveCount"], "2");
        assert_eq!(
            m.message_attributes["sub"].string_value.as_deref(),
            Some("alice")
        );
        let empty: ReceiveOut = serde_json::from_str("{}").unwrap();
        assert!(empty.messages.is_empty());
        let batch: BatchOut = serde_json::from_str(
            r#"{"Successful":[{"Id":"0"}],"Failed":[{"Id":"1","SenderFault":true,"Code":"ReceiptHandleIsInvalid","Message":"m"}]}"#,
        )
        .unwrap();
        assert_eq!(batch.successful.len(), 1);
        assert_eq!(batch.failed[0].code, "ReceiptHandleIsInvalid");
    }

    #[test]
    fn errors_carry_the_code_and_say_whether_to_retry() {
        let mut headers = http::HeaderMap::new();
        let e = service_error(
            400,
            &headers,
            br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"gone"}"#,
        );
        assert_eq!(e.to_string(), "QueueDoesNotExist: gone");
        assert!(!e.is_retryable());
        headers.insert(
            "x-amzn-query-error",
            http::HeaderValue::from_static("AWS.SimpleQueueService.NonExistentQueue;Sender"),
        );
        let e = service_error(400, &headers, b"not json");
        assert_eq!(e.to_string(), "AWS.SimpleQueueService.NonExistentQueue: ");
        let e = service_error(
            400,
            &http::HeaderMap::new(),
            br#"{"__type":"com.amazonaws.sqs#ThrottlingException","message":"slow down"}"#,
        );
        assert!(e.is_retryable());
        assert!(service_error(503, &http::HeaderMap::new(), b"").is_retryable());
        assert!(WireError::Timeout.is_retryable());
    }
}
