//! The router: `GET /fetch/self?username=S` and `GET /fetch/lb`, with JSON 404 and 405 answers
//! for everything else. The same router serves the local HTTP server and the Lambda function.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use buttonparty::rules::Millis;

use crate::error::ApiError;
use crate::model::{self, LeaderboardEntry, SelfView};
use crate::queries;
use crate::store::Store;

/// Path of a player's own data.
pub const SELF_PATH: &str = "/fetch/self";
/// Path of the leaderboard.
pub const LEADERBOARD_PATH: &str = "/fetch/lb";

/// Where a request's "now" comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The system clock (production).
    System,
    /// A fixed instant in epoch ms (tests).
    Fixed(Millis),
}

impl Clock {
    /// The current time in epoch milliseconds.
    pub fn now(&self) -> Millis {
        match self {
            Self::System => system_now(),
            Self::Fixed(t) => *t,
        }
    }
}

/// The system clock in epoch milliseconds (0 before 1970, saturating far in the future).
pub fn system_now() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
    })
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The clock.
    pub clock: Clock,
    /// Verified identity: the JWT claim naming the player (see `BUTTONPARTY_IDENTITY_CLAIM`).
    pub identity_claim: Option<String>,
}

impl AppState {
    /// State reading the system clock, without verified identity.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            clock: Clock::System,
            identity_claim: None,
        }
    }
}

/// The player named by the verified JWT claim `claim` of an API Gateway HTTP API request.
fn verified_username(
    context: Option<&lambda_http::request::RequestContext>,
    claim: &str,
) -> Option<String> {
    match context? {
        lambda_http::request::RequestContext::ApiGatewayV2(ctx) => ctx
            .authorizer
            .as_ref()?
            .jwt
            .as_ref()?
            .claims
            .get(claim)
            .cloned(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The API's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(SELF_PATH, get(get_self))
        .route(LEADERBOARD_PATH, get(get_leaderboard))
        // After the routes: it applies to the routes already added.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

/// `GET /fetch/self?username=S`.
///
/// With verified identity on, the player is the one named by the JWT claim and the query string
/// is ignored.
async fn get_self(
    State(state): State<AppState>,
    context: Option<Extension<lambda_http::request::RequestContext>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let username = match &state.identity_claim {
        Some(claim) => {
            let name = verified_username(context.as_ref().map(|c| &c.0), claim)
                .ok_or(ApiError::Unauthorized)?;
            model::username_from_query(&[("username".to_owned(), name)])?.to_owned()
        }
        None => {
            let Query(pairs) =
                query.map_err(|_| ApiError::BadRequest("malformed query string".into()))?;
            model::username_from_query(&pairs)?.to_owned()
        }
    };
    let now = state.clock.now();
    let view: Option<SelfView> = state
        .store
        .run(|pool| async move { queries::load_self(&pool, &username, now).await })
        .await?;
    let view = view.ok_or(ApiError::UnknownUser)?;
    Ok(no_store(Json(view)))
}

/// `GET /fetch/lb`.
async fn get_leaderboard(State(state): State<AppState>) -> Result<Response, ApiError> {
    let top: Vec<LeaderboardEntry> = state
        .store
        .run(|pool| async move { queries::load_leaderboard(&pool).await })
        .await?;
    Ok(no_store(Json(top)))
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Answers change with every round: no cache may keep them.
fn no_store(body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_clock_is_fixed_and_system_clock_is_plausible() {
        assert_eq!(Clock::Fixed(42).now(), 42);
        // After 2024-01-01 and before 2200.
        let now = Clock::System.now();
        assert!(now > 1_704_067_200_000 && now < 7_258_118_400_000, "{now}");
    }
}
