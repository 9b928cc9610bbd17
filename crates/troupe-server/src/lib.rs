//! Troupe's HTTP API as a library (axum): the versioned task API under
//! `/v1`, `/healthz`, and `/metrics` in the Prometheus text format.
//!
//! - `POST /v1/tasks` with `{"goal": "..."}` → `202 {"task_id": "..."}`
//! - `GET /v1/tasks/{id}` → the document `troupe run --json` prints
//! - `GET /v1/tasks/{id}/ledger` → the task ledger and the progress ledger
//! - `GET /v1/tasks?status=&before=&limit=` → a page of tasks, newest first
//! - `GET /healthz`, `GET /metrics`
//!
//! Errors are `{"error": {"code", "message"}}` with a stable code. A request's
//! `X-Request-Id` (or a new one) is echoed in the response and carried by
//! every log line and span of the task it creates.

mod api;
mod error;
mod extract;
mod metrics;

use std::net::SocketAddr;

pub use api::{ApiState, router};
pub use error::ApiError;
pub use metrics::Metrics;

/// Serves `app` on `listener` until `shutdown` is cancelled, then finishes
/// the requests in progress.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "HTTP server listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
