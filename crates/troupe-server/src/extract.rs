//! Typed extractors: each handler names what it needs (a task id from the
//! path, a JSON body, query parameters, the runtime, the request's id) and
//! gets it already checked, or the request is answered with an [`ApiError`]
//! before the handler runs.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use troupe::Troupe;
use troupe::core::TaskId;

use crate::api::{ApiState, MAX_BODY};
use crate::error::ApiError;

/// The runtime tasks are submitted to; `404` on a server that runs none.
pub(crate) struct Runtime(pub(crate) Troupe);

impl FromRequestParts<ApiState> for Runtime {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        state
            .troupe
            .clone()
            .map(Runtime)
            .ok_or_else(|| ApiError::not_found("this server runs no tasks"))
    }
}

/// The `{id}` of the path, as a task id; `400` when it is not one.
pub(crate) struct TaskIdPath(pub(crate) TaskId);

impl<S: Send + Sync> FromRequestParts<S> for TaskIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        task_id(&text).map(TaskIdPath)
    }
}

/// A task id given as text.
pub(crate) fn task_id(text: &str) -> Result<TaskId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a task id")))
}

/// The query string, as `T`; `400` when it does not fit.
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        Ok(QueryParams(value))
    }
}

/// The JSON body, as `T`; `413`, `415` or `400` (saying what shape is
/// wanted, `expected`) when it is too big, not JSON, or does not fit.
pub(crate) struct JsonBody<T>(pub(crate) T);

/// What a body type tells the client it should look like.
pub(crate) trait Expected {
    /// The shape, for the error message (`{"goal": "..."}`).
    const SHAPE: &'static str;
}

impl<S: Send + Sync, T: DeserializeOwned + Expected> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(e) => Err(body_error(&e, T::SHAPE)),
        }
    }
}

fn body_error(e: &JsonRejection, shape: &str) -> ApiError {
    match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {MAX_BODY} bytes"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        _ => ApiError::bad_request(format!("the body must be {shape}: {}", e.body_text())),
    }
}

/// The id of the request being served (the client's `X-Request-Id`, or a new one).
#[derive(Clone, Debug)]
pub(crate) struct RequestId(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(troupe::request_id(None))))
    }
}
