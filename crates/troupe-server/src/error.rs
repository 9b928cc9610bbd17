//! [`ApiError`]: every error the API returns, as `{"error": {"code", "message"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use troupe::TroupeError;

/// An API error: an HTTP status, a stable code and a message without internals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code (`not_found`, `invalid_goal`, ...).
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// `404 not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `400 bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<TroupeError> for ApiError {
    fn from(e: TroupeError) -> Self {
        match e {
            TroupeError::InvalidGoal(m) => Self::new(StatusCode::BAD_REQUEST, "invalid_goal", m),
            other => {
                // The detail goes to the log, not to the client.
                tracing::error!(error = %other, "request failed");
                let (status, code, message) = match other {
                    TroupeError::Store(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        "the store is unavailable; try again later",
                    ),
                    TroupeError::Bus(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "bus_unavailable",
                        "the message bus is unavailable; try again later",
                    ),
                    _ => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "internal error",
                    ),
                };
                Self::new(status, code, message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}
