//! Troupe's HTTP API inside an axum application you already have: merge
//! `troupe_server::router` into your `Router`, beside your own routes.
//!
//! The app here has a `/hello` route of its own and gets Troupe's task API
//! (`POST /v1/tasks`, `GET /v1/tasks/{id}`, ...) and `/healthz` by merging
//! (`Router::nest("/troupe", api)` would put them under a prefix instead). It
//! is served on `127.0.0.1:0` until a `CancellationToken` is cancelled; the
//! example then acts as a client over real HTTP: it submits a goal, polls
//! the task until it ends, and checks that its own route still answers. A
//! scripted mock LLM stands in for a real model. Run with
//! `cargo run -p example-axum-embed`.

// An example program prints its output.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use anyhow::{Context as _, ensure};
use axum::Router;
use axum::routing::get;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use troupe::Troupe;
use troupe::core::task::{TaskDocument, TaskStatus};
use troupe_llm::mock::MockLlm;
use troupe_server::ApiState;

/// How often, and how many times, the client looks at the task.
const POLL_EVERY: Duration = Duration::from_millis(50);
const POLLS: u32 = 200;

/// Your application: its own routes, and Troupe's API for `troupe`.
fn app(troupe: Troupe) -> Router {
    let api = troupe_server::router(ApiState::new(troupe));
    Router::new()
        .route("/hello", get(|| async { "hello from my app" }))
        .merge(api)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `Troupe` is a cheap handle: one clone goes to the router, one stays here.
    let troupe = Troupe::builder().llm(MockLlm::builtin()).build().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(troupe_server::serve(
        listener,
        app(troupe.clone()),
        shutdown.clone(),
    ));
    println!("serving on {base}");

    let outcome = client(&base).await;
    // Stop serving, then stop the runtime, whatever the client saw.
    shutdown.cancel();
    server.await??;
    troupe.shutdown().await;
    let document = outcome?;

    ensure!(
        document.status == TaskStatus::Completed,
        "the task ended {}",
        document.status
    );
    ensure!(
        document.result.as_deref().is_some_and(|r| !r.is_empty()),
        "a completed task has an answer"
    );
    println!(
        "task {} completed over HTTP: {} subtasks, {} tokens",
        document.task_id,
        document.subtasks.len(),
        document.usage.total()
    );
    Ok(())
}

/// What a client of the app does: uses `/hello`, submits a goal, waits for
/// its task to end; returns the task as `GET /v1/tasks/{id}` gives it.
async fn client(base: &str) -> anyhow::Result<TaskDocument> {
    let http = reqwest::Client::new();
    hello(&http, base).await?;

    let submitted: serde_json::Value = http
        .post(format!("{base}/v1/tasks"))
        .json(&json!({"goal": "Plan a team offsite for twelve people"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = submitted["task_id"]
        .as_str()
        .context("POST /v1/tasks answers with a task_id")?;
    println!("POST /v1/tasks: task {id}");

    let mut document = None;
    for _ in 0..POLLS {
        let now: TaskDocument = http
            .get(format!("{base}/v1/tasks/{id}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if now.status.is_terminal() {
            document = Some(now);
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let document = document
        .with_context(|| format!("task {id} did not end within {:?}", POLL_EVERY * POLLS))?;
    println!("GET /v1/tasks/{id}: {}", document.status);

    // The app's own route still works beside Troupe's.
    hello(&http, base).await?;
    Ok(document)
}

/// Checks the app's own route.
async fn hello(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let url = format!("{base}/hello");
    let text = http
        .get(&url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    ensure!(text == "hello from my app", "GET /hello said {text:?}");
    println!("GET /hello: {text}");
    Ok(())
}
