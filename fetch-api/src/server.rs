//! Running the router: as a local HTTP server ([`serve`]) or as an AWS Lambda function behind an
//! API Gateway HTTP API, payload format 2.0 ([`lambda_service`], [`run_lambda`]). Both run the
//! same [`Router`]; the Lambda side only converts events and strips a named stage from the path.

use std::convert::Infallible;
use std::future::Future;

use axum::Router;
use axum::http::Uri;
use lambda_http::request::RequestContext;
use lambda_http::{RequestExt, Service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

/// Serves `router` over HTTP on `listener` until `shutdown` is cancelled, then finishes the
/// requests in flight and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The router as the service `lambda_http::run` drives: it receives requests converted from API
/// Gateway events by `lambda_http` and returns the router's responses, which `lambda_http`
/// converts back.
pub fn lambda_service(
    router: Router,
) -> impl Service<
    lambda_http::Request,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .map_request(strip_stage)
        .service(router)
}

/// Runs the router as a Lambda function until the runtime stops it.
pub async fn run_lambda(router: Router) -> Result<(), lambda_http::Error> {
    lambda_http::run(lambda_service(router)).await
}

/// `lambda_http` prefixes the path with the API Gateway stage when the stage is not `$default`
/// (`/prod/fetch/lb`); the routes are stage-independent, so the prefix is removed again.
fn strip_stage(mut request: lambda_http::Request) -> lambda_http::Request {
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.clone(),
        _ => None,
    };
    if let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") {
        let uri = request.uri();
        if let Some(path) = path_without_stage(uri.path(), &stage) {
            let path_and_query = match uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.to_owned(),
            };
            let mut parts = uri.clone().into_parts();
            if let Ok(pq) = path_and_query.parse() {
                parts.path_and_query = Some(pq);
                if let Ok(new_uri) = Uri::from_parts(parts) {
                    *request.uri_mut() = new_uri;
                }
            }
        }
    }
    request
}

/// `path` without a leading `/<stage>` segment, if it has one.
fn path_without_stage<'a>(path: &'a str, stage: &str) -> Option<&'a str> {
    let rest = path.strip_prefix('/')?.strip_prefix(stage)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_prefix_is_removed_only_as_a_whole_segment() {
        assert_eq!(
            path_without_stage("/prod/fetch/lb", "prod"),
            Some("/fetch/lb")
        );
        assert_eq!(path_without_stage("/prod", "prod"), Some("/"));
        assert_eq!(path_without_stage("/production/fetch/lb", "prod"), None);
        assert_eq!(path_without_stage("/fetch/lb", "prod"), None);
    }
}
