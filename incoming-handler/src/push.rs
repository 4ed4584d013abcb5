//! Push endpoints, managed as AWS's mobile token-management guide describes: create the platform
//! endpoint for a token; read its attributes; when the token changed or the endpoint is disabled,
//! set `Token` and `Enabled=true`; when it is gone, create it again; when creating fails with
//! "already exists with the same Token, but different attributes", take over that endpoint.
//! The endpoint is subscribed to the topic once.

use aws_sdk_sns::error::ProvideErrorMetadata;
use buttonparty::aws::error_text;
use buttonparty::messages::PushToken;

/// An SNS call failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// SNS unreachable, throttling or failing: retrying later can help.
    #[error("SNS unavailable: {0}")]
    Unavailable(String),
    /// SNS refused (e.g. an invalid token): retrying the same request will not help.
    #[error("SNS refused: {0}")]
    Refused(String),
}

impl PushError {
    /// Whether retrying later can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PushError::Unavailable(_))
    }
}

fn classify<E, R>(e: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> PushError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    let text = error_text(e);
    match e {
        SdkError::ServiceError(se) => match se.err().code() {
            Some(
                "Throttling" | "ThrottledException" | "InternalError" | "InternalFailure"
                | "ServiceUnavailable" | "KMSThrottling",
            ) => PushError::Unavailable(text),
            _ => PushError::Refused(text),
        },
        _ => PushError::Unavailable(text),
    }
}

/// The endpoint and subscription of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Platform endpoint ARN.
    pub endpoint_arn: String,
    /// Topic subscription ARN.
    pub subscription_arn: Option<String>,
}

/// SNS access for push registrations.
#[derive(Debug, Clone)]
pub struct Push {
    /// The SNS client.
    pub sns: aws_sdk_sns::Client,
    /// Platform application (FCM) ARN.
    pub platform_application_arn: String,
    /// Topic every endpoint subscribes to.
    pub topic_arn: String,
}

impl Push {
    /// Brings the device's endpoint and subscription up to date with `token`, starting from what
    /// is stored (`known`). Returns the registration to store.
    pub async fn register(
        &self,
        token: &PushToken,
        known: Option<&Registration>,
    ) -> Result<Registration, PushError> {
        let mut subscription = known.and_then(|k| k.subscription_arn.clone());
        let endpoint = match known {
            None => self.create(token).await?,
            Some(k) => match self.refresh(&k.endpoint_arn, token).await? {
                true => k.endpoint_arn.clone(),
                false => {
                    // The endpoint was deleted: create it again and subscribe the new one.
                    subscription = None;
                    self.create(token).await?
                }
            },
        };
        if known.is_none_or(|k| k.endpoint_arn != endpoint) {
            // A new or taken-over endpoint: make sure its token and state are right.
            self.refresh(&endpoint, token).await?;
            subscription = None;
        }
        let subscription_arn = match subscription {
            Some(s) => Some(s),
            None => Some(self.subscribe(&endpoint).await?),
        };
        Ok(Registration {
            endpoint_arn: endpoint,
            subscription_arn,
        })
    }

    async fn create(&self, token: &PushToken) -> Result<String, PushError> {
        match self
            .sns
            .create_platform_endpoint()
            .platform_application_arn(&self.platform_application_arn)
            .token(token.expose())
            .send()
            .await
        {
            Ok(out) => out
                .endpoint_arn
                .ok_or_else(|| PushError::Refused("no endpoint ARN returned".into())),
            Err(e) => {
                let message = e
                    .as_service_error()
                    .and_then(|se| se.message())
                    .unwrap_or_default()
                    .to_owned();
                match existing_endpoint_arn(&message) {
                    Some(arn) => Ok(arn),
                    // Never echo the SDK message here: it may contain the token.
                    None => Err(match classify(&e) {
                        PushError::Unavailable(_) => {
                            PushError::Unavailable("CreatePlatformEndpoint failed".into())
                        }
                        PushError::Refused(_) => PushError::Refused(format!(
                            "CreatePlatformEndpoint refused ({})",
                            e.as_service_error()
                                .and_then(|s| s.code())
                                .unwrap_or("unknown")
                        )),
                    }),
                }
            }
        }
    }

    /// Sets the token and enables the endpoint when needed. `Ok(false)` when it no longer exists.
    async fn refresh(&self, endpoint: &str, token: &PushToken) -> Result<bool, PushError> {
        let attrs = match self
            .sns
            .get_endpoint_attributes()
            .endpoint_arn(endpoint)
            .send()
            .await
        {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e) => {
                let code = e
                    .as_service_error()
                    .and_then(|s| s.code())
                    .unwrap_or_default();
                if code == "NotFound" || code == "NotFoundException" {
                    return Ok(false);
                }
                return Err(classify(&e));
            }
        };
        let same_token = attrs.get("Token").map(String::as_str) == Some(token.expose());
        let enabled = attrs
            .get("Enabled")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if !same_token || !enabled {
            self.sns
                .set_endpoint_attributes()
                .endpoint_arn(endpoint)
                .attributes("Token", token.expose())
                .attributes("Enabled", "true")
                .send()
                .await
                .map_err(|e| match classify(&e) {
                    PushError::Unavailable(_) => {
                        PushError::Unavailable("SetEndpointAttributes failed".into())
                    }
                    PushError::Refused(_) => {
                        PushError::Refused("SetEndpointAttributes refused".into())
                    }
                })?;
            tracing::debug!(
                endpoint,
                token_changed = !same_token,
                was_enabled = enabled,
                "endpoint updated"
            );
        }
        Ok(true)
    }

    /// Removes an endpoint made for a token that turned out not to be the latest (best effort:
    /// a failure is logged; the endpoint then only costs a disabled-token delivery attempt).
    pub async fn remove(&self, reg: &Registration) {
        if let Some(sub) = &reg.subscription_arn
            && let Err(e) = self.sns.unsubscribe().subscription_arn(sub).send().await
        {
            tracing::warn!(error = %error_text(&e), "could not remove a superseded subscription");
        }
        if let Err(e) = self
            .sns
            .delete_endpoint()
            .endpoint_arn(&reg.endpoint_arn)
            .send()
            .await
        {
            tracing::warn!(error = %error_text(&e), "could not remove a superseded endpoint");
        }
    }

    async fn subscribe(&self, endpoint: &str) -> Result<String, PushError> {
        let out = self
            .sns
            .subscribe()
            .topic_arn(&self.topic_arn)
            .protocol("application")
            .endpoint(endpoint)
            .return_subscription_arn(true)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        out.subscription_arn
            .ok_or_else(|| PushError::Refused("no subscription ARN returned".into()))
    }
}

/// The endpoint ARN in SNS's "Endpoint <arn> already exists with the same Token, but different
/// attributes." message.
pub fn existing_endpoint_arn(message: &str) -> Option<String> {
    let rest = &message[message.find("Endpoint ")? + "Endpoint ".len()..];
    let arn = rest.split_whitespace().next()?;
    (arn.starts_with("arn:") && message.contains("already exists")).then(|| arn.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_endpoint_is_found_in_the_error_message() {
        let m = "Invalid parameter: Token Reason: Endpoint arn:aws:sns:us-east-1:000000000000:endpoint/GCM/app/8f1e already exists with the same Token, but different attributes.";
        assert_eq!(
            existing_endpoint_arn(m).as_deref(),
            Some("arn:aws:sns:us-east-1:000000000000:endpoint/GCM/app/8f1e")
        );
        assert_eq!(existing_endpoint_arn("Invalid parameter: Token"), None);
    }
}
