//! The API's errors and their JSON answers: `{"error": "..."}` with a proper status code.
//! Messages are fixed texts: no SQL, host, user or password ever reaches a client; the details
//! of server-side failures go to the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::UsernameError;
use crate::store::StoreError;

/// Seconds a client is asked to wait after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// An error answer of the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// `GET /fetch/self` for a username nobody registered (404).
    #[error("unknown user")]
    UnknownUser,
    /// Verified identity is on and the request carries no verified claim (401).
    #[error("sign-in required")]
    Unauthorized,
    /// No such route (404).
    #[error("not found")]
    NotFound,
    /// The route exists but not for this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The database is unreachable or too slow (503).
    #[error("database unavailable, try again later")]
    Unavailable,
    /// Something that should not happen (500).
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::UnknownUser | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<UsernameError> for ApiError {
    fn from(e: UsernameError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "answering 503: database unavailable");
                Self::Unavailable
            }
            StoreError::Failed(e) => {
                tracing::error!(error = %e, "answering 500: database query failed");
                Self::Internal
            }
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for (e, status) in [
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::UnknownUser, 404),
            (ApiError::NotFound, 404),
            (ApiError::MethodNotAllowed, 405),
            (ApiError::Unavailable, 503),
            (ApiError::Internal, 500),
        ] {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.into_response().status().as_u16(), status);
        }
    }

    #[test]
    fn database_errors_never_reach_the_client() {
        let secret = "mysql://bp:sentinel-pw@db.internal:3306/buttonparty SELECT * FROM users";
        let e = ApiError::from(StoreError::Unavailable(secret.into()));
        assert_eq!(e.to_string(), "database unavailable, try again later");
        let e = ApiError::from(StoreError::Failed(sqlx::Error::Protocol(secret.into())));
        assert_eq!(e.to_string(), "internal error");
    }

    #[test]
    fn unavailable_asks_to_retry() {
        let response = ApiError::Unavailable.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
