//! The routes: the task API under `/v1`, `/healthz` and `/metrics`.

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument as _;
use troupe::Troupe;
use troupe::core::TaskId;
use troupe::core::ledger::Ledgers;
use troupe::core::store::TaskQuery;
use troupe::core::task::{TaskStatus, TaskSummary};

use crate::error::ApiError;
use crate::extract::{Expected, JsonBody, QueryParams, RequestId, Runtime, TaskIdPath, task_id};
use crate::metrics::Metrics;

/// The largest request body accepted.
pub(crate) const MAX_BODY: usize = 1024 * 1024;
/// The largest page of tasks.
const MAX_PAGE: usize = 500;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The runtime tasks are submitted to (`None`: only health and metrics).
    pub troupe: Option<Troupe>,
    /// The metrics to expose (`None`: no `/metrics`).
    pub metrics: Option<Metrics>,
}

impl ApiState {
    /// The task API of `troupe`, without `/metrics`.
    pub fn new(troupe: Troupe) -> Self {
        Self {
            troupe: Some(troupe),
            metrics: None,
        }
    }

    /// The same, with `/metrics` served from `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// The whole API: the task routes when `state.troupe` is set, `/healthz`
/// always, `/metrics` when `state.metrics` is set.
///
/// ```no_run
/// # async fn demo(troupe: troupe::Troupe) -> std::io::Result<()> {
/// use troupe_server::{ApiState, Metrics, router, serve};
///
/// let state = ApiState { troupe: Some(troupe), metrics: Metrics::install().ok() };
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// serve(listener, router(state), tokio_util::sync::CancellationToken::new()).await
/// # }
/// ```
pub fn router(state: ApiState) -> Router {
    let mut app = Router::new().route("/healthz", get(healthz));
    if state.metrics.is_some() {
        app = app.route("/metrics", get(metrics));
    }
    if state.troupe.is_some() {
        app = app
            .route("/v1/tasks", post(submit).get(list))
            .route("/v1/tasks/{id}", get(task))
            .route("/v1/tasks/{id}/ledger", get(ledger));
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(with_request_id))
        .with_state(state)
}

/// Gives every request an id (the client's `X-Request-Id` if sane), a span
/// carrying it, and echoes it in the response.
async fn with_request_id(mut request: Request, next: Next) -> Response {
    let id = troupe::request_id(
        request
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok()),
    );
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "http.request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    response
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(state): State<ApiState>) -> Response {
    match &state.metrics {
        Some(m) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            m.render(),
        )
            .into_response(),
        None => ApiError::not_found("metrics are not enabled").into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

#[derive(Debug, Deserialize)]
struct SubmitRequest {
    goal: String,
}

impl Expected for SubmitRequest {
    const SHAPE: &'static str = "{\"goal\": \"...\"}";
}

#[derive(Debug, Serialize)]
struct Submitted {
    task_id: TaskId,
}

async fn submit(
    Runtime(troupe): Runtime,
    RequestId(request_id): RequestId,
    JsonBody(body): JsonBody<SubmitRequest>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    let handle = troupe.submit_for_request(body.goal, request_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Submitted {
            task_id: handle.id(),
        }),
    ))
}

async fn task(Runtime(troupe): Runtime, TaskIdPath(id): TaskIdPath) -> Result<Response, ApiError> {
    let record = troupe
        .task(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no task {id}")))?;
    Ok(Json(record.document(record.elapsed_ms())).into_response())
}

async fn ledger(
    Runtime(troupe): Runtime,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<Ledgers>, ApiError> {
    let record = troupe
        .task(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no task {id}")))?;
    let progress = troupe.progress(id).await?;
    Ok(Json(Ledgers::new(record, progress)))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Page {
    tasks: Vec<TaskSummary>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<TaskId>,
}

async fn list(
    Runtime(troupe): Runtime,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Page>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(str::parse::<TaskStatus>)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let before = query.before.as_deref().map(task_id).transpose()?;
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    // One more than the page, to know whether another page follows.
    let mut tasks = troupe
        .list_tasks(&TaskQuery {
            status,
            before,
            limit: limit + 1,
        })
        .await?;
    let next_before = if tasks.len() > limit {
        tasks.truncate(limit);
        tasks.last().map(|t| t.id)
    } else {
        None
    };
    Ok(Json(Page { tasks, next_before }))
}
