//! The HTTP API as a client sees it, on a real socket.

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use troupe::Troupe;
use troupe_llm::mock::MockLlm;
use troupe_server::{ApiState, router, serve};

struct Api {
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
}

async fn start() -> Api {
    let troupe = Troupe::builder()
        .llm(Arc::new(MockLlm::builtin()))
        .build()
        .await
        .unwrap();
    let state = ApiState {
        troupe: Some(troupe),
        metrics: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, router(state), stop.clone()));
    Api {
        base,
        // A connection per request: after a refused oversized body the server
        // closes its side while the client may still be writing, and a pooled
        // connection could then be reused as it closes (a broken pipe seen in CI).
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
        stop,
    }
}

impl Api {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn submit(&self, goal: &str) -> String {
        let r = self
            .http
            .post(format!("{}/v1/tasks", self.base))
            .json(&json!({ "goal": goal }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let body: Value = r.json().await.unwrap();
        body["task_id"].as_str().unwrap().to_owned()
    }

    async fn wait_done(&self, id: &str) -> Value {
        let what = format!("task {id} ends");
        troupe_testkit::eventually(&what, Duration::from_secs(10), || async {
            let (status, doc) = self.get(&format!("/v1/tasks/{id}")).await;
            assert_eq!(status, StatusCode::OK);
            ["completed", "failed", "cancelled"]
                .contains(&doc["status"].as_str().unwrap())
                .then_some(doc)
        })
        .await
    }
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_goal_runs_to_its_end_and_can_be_read_back() {
    let api = start().await;
    let (status, health) = api.get("/healthz").await;
    assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));

    let r = api
        .http
        .post(format!("{}/v1/tasks", api.base))
        .header("x-request-id", "req-42")
        .json(&json!({"goal": "Write a haiku about rust"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["x-request-id"], "req-42");
    let id = r.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let doc = api.wait_done(&id).await;
    let mut keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "elapsed_ms",
            "result",
            "status",
            "subtasks",
            "task_id",
            "usage"
        ]
    );
    assert_eq!(doc["status"], "completed");
    assert_eq!(doc["subtasks"].as_array().unwrap().len(), 3);

    let (status, ledgers) = api.get(&format!("/v1/tasks/{id}/ledger")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ledgers["task_ledger"]["id"], id.as_str());
    let steps = ledgers["progress_ledger"].as_array().unwrap();
    assert_eq!(steps.first().unwrap()["event"], "task_submitted");
    assert_eq!(steps.last().unwrap()["event"], "task_completed");
    assert!(ledgers["usage_by_agent"].as_object().unwrap().len() >= 2);

    let second = api.submit("Another goal").await;
    api.wait_done(&second).await;
    let (status, page) = api.get("/v1/tasks?limit=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["tasks"][0]["id"], second.as_str(), "newest first");
    let next = page["next_before"].as_str().unwrap();
    let (_, page) = api.get(&format!("/v1/tasks?limit=1&before={next}")).await;
    assert_eq!(page["tasks"][0]["id"], id.as_str());
    assert!(page.get("next_before").is_none(), "the last page: {page}");
    let (_, page) = api.get("/v1/tasks?limit=2").await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 2);
    assert!(page.get("next_before").is_none(), "all on one page: {page}");
    let (_, page) = api.get("/v1/tasks?status=failed").await;
    assert_eq!(page["tasks"], json!([]));
    assert!(page.get("next_before").is_none());
    api.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_with_stable_codes() {
    let api = start().await;
    let post = |body: reqwest::Body, content_type: &'static str| {
        api.http
            .post(format!("{}/v1/tasks", api.base))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases: Vec<(reqwest::Body, &str, StatusCode, &str)> = vec![
        (
            "{\"goal\": \"\"}".into(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_goal",
        ),
        (
            "{\"goal\": 7}".into(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "not json".into(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "{\"goal\": \"x\"}".into(),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            format!("{{\"goal\": \"{}\"}}", "x".repeat(2 * 1024 * 1024)).into(),
            "application/json",
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (body, content_type, want, code) in cases {
        let r = post(body, content_type).await.unwrap();
        let status = r.status();
        assert!(r.headers().contains_key("x-request-id"));
        assert_error(status, &r.json().await.unwrap(), want, code);
    }
    let (status, body) = api.get("/v1/tasks/not-an-id").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = api
        .get("/v1/tasks/01a21350-e216-72ec-83d3-6c56bca1c138")
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = api.get("/v1/tasks?status=sleeping").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = api.get("/v2/anything").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = api.get("/metrics").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = api.get("/v1/tasks/%FF").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let r = api
        .http
        .delete(format!("{}/v1/tasks", api.base))
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_error(
        status,
        &r.json().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    // A request id that is not sane is replaced, not echoed.
    let r = api
        .http
        .get(format!("{}/healthz", api.base))
        .header("x-request-id", "a b")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "a b");
    api.stop.cancel();
}
