//! The client against a fake OpenAI-compatible server on loopback (wiremock):
//! the exact request it sends, and every class of answer it can get back.

// Test code: a failed expectation is meant to panic; skips are printed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::time::Duration;

use serde_json::{Value, json};
use troupe_core::llm::{CallKind, ChatMessage, ChatRequest, LlmError, LlmProvider, ResponseFormat};
use troupe_core::task::Usage;
use troupe_llm::{OpenAiClient, OpenAiConfig, StructuredOutput};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "sk-test-5f1d2c9e";

fn answer(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "fake-model-2",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 5, "total_tokens": 26}
    })
}

fn client(server: &MockServer, mode: StructuredOutput) -> OpenAiClient {
    let mut config =
        OpenAiConfig::new(format!("{}/v1", server.uri()), "fake-model").with_api_key(KEY);
    config.structured_output = mode;
    config.timeout = Duration::from_millis(500);
    OpenAiClient::new(config).unwrap()
}

fn plan_request() -> ChatRequest {
    let mut r = ChatRequest::new(
        CallKind::Plan,
        vec![
            ChatMessage::system("be brief"),
            ChatMessage::user("Goal: x"),
        ],
    );
    r.response_format = ResponseFormat::JsonSchema {
        name: "plan".into(),
        schema: json!({"type": "object", "required": ["subtasks"]}),
    };
    r.temperature = Some(0.2);
    r.max_tokens = Some(300);
    r
}

async fn respond_with(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

async fn sent_body(server: &MockServer) -> (Value, Request) {
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "one request per call");
    let req = requests.into_iter().next().unwrap();
    (serde_json::from_slice(&req.body).unwrap(), req)
}

#[tokio::test]
async fn sends_the_exact_request_and_reads_the_answer_with_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer("{\"subtasks\": []}")))
        .expect(1)
        .mount(&server)
        .await;
    let reply = client(&server, StructuredOutput::JsonSchema)
        .complete(plan_request())
        .await
        .unwrap();
    assert_eq!(reply.content, "{\"subtasks\": []}");
    assert_eq!(reply.model, "fake-model-2");
    assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        reply.usage,
        Usage {
            prompt_tokens: 21,
            completion_tokens: 5
        }
    );
    let (body, req) = sent_body(&server).await;
    assert_eq!(
        body,
        json!({
            "model": "fake-model",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Goal: x"}],
            "temperature": 0.2,
            "max_tokens": 300,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "plan", "schema": {"type": "object", "required": ["subtasks"]}, "strict": false}},
            "stream": false
        })
    );
    assert_eq!(req.headers.get("content-type").unwrap(), "application/json");
}

#[tokio::test]
async fn the_capability_decides_the_response_format() {
    for (mode, expected) in [
        (
            StructuredOutput::JsonObject,
            Some(json!({"type": "json_object"})),
        ),
        (StructuredOutput::Prompt, None),
    ] {
        let server = respond_with(ResponseTemplate::new(200).set_body_json(answer("{}"))).await;
        client(&server, mode)
            .complete(plan_request())
            .await
            .unwrap();
        let (body, _) = sent_body(&server).await;
        assert_eq!(body.get("response_format").cloned(), expected, "{mode}");
    }
}

#[tokio::test]
async fn config_defaults_fill_in_and_no_key_means_no_header() {
    let server = respond_with(ResponseTemplate::new(200).set_body_json(answer("ok"))).await;
    let mut config = OpenAiConfig::new(format!("{}/v1/", server.uri()), "m");
    config.temperature = Some(0.0);
    config.max_tokens = Some(64);
    let c = OpenAiClient::new(config).unwrap();
    c.complete(ChatRequest::new(
        CallKind::Work,
        vec![ChatMessage::user("hi")],
    ))
    .await
    .unwrap();
    let (body, req) = sent_body(&server).await;
    assert_eq!(body["temperature"], json!(0.0));
    assert_eq!(body["max_tokens"], json!(64));
    assert!(body.get("response_format").is_none());
    assert!(req.headers.get("authorization").is_none());
}

async fn error_for(template: ResponseTemplate) -> LlmError {
    let server = respond_with(template).await;
    client(&server, StructuredOutput::JsonSchema)
        .complete(plan_request())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn rate_limits_are_retryable_after_the_servers_delay() {
    let e = error_for(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "2")
            .set_body_json(json!({"error": {"message": "Rate limit reached", "type": "requests"}})),
    )
    .await;
    assert!(e.is_retryable());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    match e {
        LlmError::RateLimited { status, body, .. } => {
            assert_eq!(status, 429);
            assert!(body.contains("Rate limit reached"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_errors_are_retryable_and_keep_status_and_body() {
    for code in [500, 502, 503] {
        let e = error_for(ResponseTemplate::new(code).set_body_string("upstream down")).await;
        assert!(e.is_retryable(), "{code}");
        assert_eq!(
            e,
            LlmError::Server {
                status: code,
                body: "upstream down".into()
            }
        );
    }
}

#[tokio::test]
async fn auth_failures_are_permanent_and_never_show_the_key() {
    for code in [401, 403] {
        let e = error_for(
            ResponseTemplate::new(code)
                .set_body_json(json!({"error": {"message": "Incorrect API key provided"}})),
        )
        .await;
        assert!(!e.is_retryable());
        assert_eq!(e.class(), "auth");
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("check the API key"), "{shown}");
        assert!(!shown.contains(KEY), "{shown}");
    }
}

#[tokio::test]
async fn a_key_the_server_echoes_is_blanked_out_of_the_error() {
    for code in [401, 400, 500] {
        let e = error_for(ResponseTemplate::new(code).set_body_json(
            json!({"error": {"message": format!("Incorrect API key provided: {KEY}; and again {KEY}")}}),
        ))
        .await;
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(
            shown.contains("[REDACTED]; and again [REDACTED]"),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn bad_requests_are_permanent_and_context_errors_ask_to_shorten() {
    let e = error_for(
        ResponseTemplate::new(400)
            .set_body_json(json!({"error": {"message": "Invalid value for 'response_format'"}})),
    )
    .await;
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("HTTP 400"), "{e}");
    assert!(e.to_string().contains("Invalid value"), "{e}");

    let e = error_for(ResponseTemplate::new(400).set_body_json(json!({"error": {
        "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
        "type": "invalid_request_error", "code": "context_length_exceeded"}})))
    .await;
    assert_eq!(e.class(), "context_length");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn an_http_200_that_is_not_an_answer_is_a_retryable_failure() {
    let e =
        error_for(ResponseTemplate::new(200).set_body_json(
            json!({"error": {"message": "model overloaded", "type": "server_error"}}),
        ))
        .await;
    assert_eq!(e.class(), "invalid_response");
    assert!(e.is_retryable());
    let e = error_for(ResponseTemplate::new(200).set_body_json(json!({"choices": []}))).await;
    assert_eq!(e.class(), "invalid_response");
    let e = error_for(ResponseTemplate::new(200).set_body_json(answer("   "))).await;
    assert!(e.to_string().contains("no content"), "{e}");
    let e = error_for(ResponseTemplate::new(200).set_body_string("<html>gateway</html>")).await;
    match e {
        LlmError::InvalidResponse { body, .. } => assert_eq!(body, "<html>gateway</html>"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_slow_server_is_a_retryable_timeout() {
    let e = error_for(
        ResponseTemplate::new(200)
            .set_body_json(answer("late"))
            .set_delay(Duration::from_secs(3)),
    )
    .await;
    assert_eq!(e, LlmError::Timeout(Duration::from_millis(500)));
    assert!(e.is_retryable());
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_transport_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = OpenAiClient::new(OpenAiConfig::new(
        format!("http://127.0.0.1:{port}/v1"),
        "m",
    ))
    .unwrap();
    let e = c
        .complete(ChatRequest::new(
            CallKind::Work,
            vec![ChatMessage::user("hi")],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.class(), "transport", "{e}");
    assert!(e.is_retryable());
}

#[test]
fn bad_configurations_are_clear_errors() {
    let e = OpenAiClient::new(OpenAiConfig::new("localhost:8080/v1", "m")).unwrap_err();
    assert!(e.to_string().contains("must start with http"), "{e}");
    let e = OpenAiClient::new(OpenAiConfig::new("http://x/v1", "m").with_api_key("bad\nkey"))
        .unwrap_err();
    assert!(e.to_string().contains("API key"), "{e}");
    assert!(!e.to_string().contains("bad\nkey"));
}
