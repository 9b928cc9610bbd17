//! The client against the real offline model: SmolLM2-135M-Instruct served by
//! the `llama-server` that `scripts/local-model.sh` installs.
//!
//! In CI (`CI=true`) a missing install is a failure; elsewhere these tests are
//! skipped with a printed reason.

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
use troupe_llm::{LocalModelConfig, LocalPaths, LocalServer, OpenAiClient};

/// The installed paths, or `None` (after saying why) when they are missing outside CI.
fn installed() -> Option<LocalPaths> {
    let paths = LocalPaths::resolve(|name| std::env::var(name).ok());
    match paths.check() {
        Ok(()) => Some(paths),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and the local model is not installed: {e}")
        }
        Err(e) => {
            eprintln!("skipped: the local model is not installed ({e})");
            None
        }
    }
}

async fn start(paths: LocalPaths, port: Option<u16>) -> (LocalServer, OpenAiClient) {
    let mut config = LocalModelConfig::new(paths);
    config.port = port;
    config.parallel = 1;
    config.ctx_size = 2048;
    let server = LocalServer::start(&config).await.unwrap();
    let client = OpenAiClient::new(server.client_config()).unwrap();
    (server, client)
}

fn ask(text: &str, max_tokens: u32) -> ChatRequest {
    let mut r = ChatRequest::new(CallKind::Other, vec![ChatMessage::user(text)]);
    r.max_tokens = Some(max_tokens);
    r.temperature = Some(0.0);
    r
}

#[tokio::test]
async fn plain_chat_answers_and_counts_its_tokens() {
    let Some(paths) = installed() else { return };
    let (server, client) = start(paths, None).await;
    let reply = client
        .complete(ask(
            "What is the capital of France? Answer in one word.",
            16,
        ))
        .await
        .unwrap();
    assert!(!reply.content.trim().is_empty());
    assert!(reply.usage.prompt_tokens > 5, "{:?}", reply.usage);
    assert!(
        (1..=16).contains(&reply.usage.completion_tokens),
        "{:?}",
        reply.usage
    );
    server.stop().await;
}

#[tokio::test]
async fn json_schema_output_is_valid_against_its_schema() {
    let Some(paths) = installed() else { return };
    let (server, client) = start(paths, None).await;
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1, "maxLength": 40},
            "population_millions": {"type": "number"},
            "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 40}, "minItems": 1, "maxItems": 3}
        },
        "required": ["city", "population_millions", "landmarks"],
        "additionalProperties": false
    });
    let validator = jsonschema::validator_for(&schema).unwrap();
    for city in ["Paris", "Tokyo", "Lima"] {
        let mut request = ask(&format!("Describe {city} as JSON."), 200);
        request.response_format = ResponseFormat::JsonSchema {
            name: "city".into(),
            schema: schema.clone(),
        };
        let reply = client.complete(request).await.unwrap();
        let value: Value = serde_json::from_str(&reply.content)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.content));
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?} in {value}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_bad_request_is_a_permanent_error_with_the_servers_reason() {
    let Some(paths) = installed() else { return };
    let (server, client) = start(paths, None).await;
    let mut request = ask("hi", 8);
    request.response_format = ResponseFormat::JsonSchema {
        name: "broken".into(),
        schema: json!({"type": "no-such-type"}),
    };
    let e = client.complete(request).await.unwrap_err();
    match &e {
        LlmError::BadRequest { status, body } => {
            assert_eq!(*status, 400);
            assert!(body.contains("no-such-type"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.is_retryable());

    // A prompt longer than the context asks the caller to shorten it.
    let e = client
        .complete(ask(&"word ".repeat(5_000), 8))
        .await
        .unwrap_err();
    assert_eq!(e.class(), "context_length", "{e:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_server_killed_mid_request_is_a_retryable_error_and_a_restart_recovers() {
    let Some(paths) = installed() else { return };
    let (server, client) = start(paths.clone(), None).await;
    let port = server.port();
    let client = std::sync::Arc::new(client);
    let long = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .complete(ask(
                    "Write a very long story about a lighthouse keeper.",
                    4_000,
                ))
                .await
        })
    };
    // Let generation start, then crash the server under the request (SIGKILL
    // to the watchdog's children: llama-server).
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!long.is_finished(), "the request ended before the kill");
    let watchdog = server.pid().unwrap().to_string();
    let killed = std::process::Command::new("pkill")
        .args(["-KILL", "-P", &watchdog])
        .status()
        .unwrap();
    assert!(killed.success());
    let e = tokio::time::timeout(Duration::from_secs(10), long)
        .await
        .expect("the request ends soon after the crash")
        .unwrap()
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert_eq!(e.class(), "transport", "{e:?}");
    drop(server);

    // A caller that retries with backoff gets its answer once the server is back.
    let restarted = tokio::spawn(async move { start(paths, Some(port)).await.0 });
    let reply = troupe_testkit::eventually(
        "an answer after the restart",
        Duration::from_secs(15),
        || async {
            match client.complete(ask("Say OK.", 4)).await {
                Ok(reply) => Some(reply),
                Err(e) if e.is_retryable() => None,
                Err(e) => panic!("a permanent error after the restart: {e:?}"),
            }
        },
    )
    .await;
    let server = restarted.await.unwrap();
    assert!(!reply.content.is_empty());
    server.stop().await;
}
