//! What the observability tests run against: `troupe` with its JSON log
//! lines read back, a fake OpenAI endpoint that echoes a wrong key as some
//! providers do, and an OTLP/HTTP receiver keeping the spans of a traced run.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{Value, json};

pub(crate) fn troupe(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    crate::common::run(dir, args, env)
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON log lines on stderr; every line must be one.
pub(crate) fn log_lines(out: &Output) -> Vec<Value> {
    text(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// The fields of the span named `name` among a line's spans.
pub(crate) fn span<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

/// A chat-completions endpoint that wants `key`: anything else gets a 401
/// that echoes the key it was sent, as some providers do.
#[derive(Clone)]
pub(crate) struct FakeOpenAi {
    pub(crate) key: String,
}

pub(crate) async fn completions(
    State(fake): State<FakeOpenAi>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let sent = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    if sent != fake.key {
        let error = json!({"error": {"message": format!("Incorrect API key provided: {sent}"),
                                     "type": "invalid_request_error", "code": "invalid_api_key"}});
        return (StatusCode::UNAUTHORIZED, axum::Json(error)).into_response();
    }
    let request: Value = serde_json::from_slice(&body).unwrap();
    let content = if request["response_format"]["type"] == "json_schema" {
        json!({"facts": [], "subtasks": [
            {"id": "s1", "role": "writer", "title": "Write", "instruction": "Write it", "depends_on": []}
        ]})
        .to_string()
    } else {
        "Rust never sleeps; the borrow checker keeps watch.".to_owned()
    };
    axum::Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "fake-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    }))
    .into_response()
}

pub(crate) async fn start(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// An OTLP/HTTP receiver keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

async fn traces(State(receiver): State<Receiver>, body: Bytes) -> impl IntoResponse {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            let mut spans = receiver.spans.lock().unwrap();
            for resource in request.resource_spans {
                for scope in resource.scope_spans {
                    spans.extend(scope.spans);
                }
            }
            (
                StatusCode::OK,
                [("content-type", "application/x-protobuf")],
                Vec::new(),
            )
        }
        Err(_) => (
            StatusCode::BAD_REQUEST,
            [("content-type", "text/plain")],
            b"not an ExportTraceServiceRequest".to_vec(),
        ),
    }
}

fn attr(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone())
}

pub(crate) fn attr_str(span: &Span, key: &str) -> Option<String> {
    match attr(span, key)? {
        AnyValue::StringValue(s) => Some(s),
        _ => None,
    }
}

pub(crate) fn attr_int(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)? {
        AnyValue::IntValue(i) => Some(i),
        _ => None,
    }
}

/// Runs `troupe run` (with `extra` arguments before the goal) exporting to
/// a receiver; returns the run's document and every span it exported.
pub(crate) async fn traced_run(extra: &[&str]) -> (Value, Vec<Span>) {
    let receiver = Receiver::default();
    let addr = start(
        Router::new()
            .route("/v1/traces", post(traces))
            .with_state(receiver.clone()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let endpoint = format!("http://{addr}");
    let mut args: Vec<String> = ["run", "--store", "memory", "--json"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push("Write a haiku about rust".to_owned());
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        troupe(&path, &args, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The process flushed its spans before exiting.
    let spans = receiver.spans.lock().unwrap().clone();
    (serde_json::from_slice(&out.stdout).unwrap(), spans)
}
