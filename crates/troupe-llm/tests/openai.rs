//! The client against the real OpenAI API. Runs only when `OPENAI_API_KEY` is
//! set (`OPENAI_BASE_URL` and `OPENAI_MODEL` may point it elsewhere); otherwise
//! it is skipped with a printed reason, in CI as well.

// Test code: a failed expectation is meant to panic; skips are printed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use serde_json::{Value, json};
use troupe_core::llm::{CallKind, ChatMessage, ChatRequest, LlmProvider, ResponseFormat};
use troupe_llm::{OPENAI_BASE_URL, OpenAiClient, OpenAiConfig};

fn client() -> Option<OpenAiClient> {
    let Some(key) = std::env::var("OPENAI_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
    else {
        eprintln!("skipped: OPENAI_API_KEY is not set");
        return None;
    };
    let base = std::env::var("OPENAI_BASE_URL").unwrap_or_else(|_| OPENAI_BASE_URL.to_owned());
    let model = std::env::var("OPENAI_MODEL").unwrap_or_else(|_| "gpt-4o-mini".to_owned());
    Some(OpenAiClient::new(OpenAiConfig::new(base, model).with_api_key(key)).unwrap())
}

#[tokio::test]
async fn openai_answers_in_the_requested_schema_and_counts_tokens() {
    let Some(client) = client() else { return };
    let mut request = ChatRequest::new(
        CallKind::Other,
        vec![ChatMessage::user("Name two primary colours as JSON.")],
    );
    request.max_tokens = Some(100);
    let schema = json!({
        "type": "object",
        "properties": {"colours": {"type": "array", "items": {"type": "string"}}},
        "required": ["colours"],
        "additionalProperties": false
    });
    request.response_format = ResponseFormat::JsonSchema {
        name: "colours".into(),
        schema: schema.clone(),
    };
    let reply = client.complete(request).await.unwrap();
    let value: Value = serde_json::from_str(&reply.content).unwrap();
    assert!(jsonschema::is_valid(&schema, &value), "{value}");
    assert!(reply.usage.prompt_tokens > 0 && reply.usage.completion_tokens > 0);
}

#[tokio::test]
async fn a_wrong_key_is_an_auth_error() {
    let Some(_) = client() else { return };
    let base = std::env::var("OPENAI_BASE_URL").unwrap_or_else(|_| OPENAI_BASE_URL.to_owned());
    let bad =
        OpenAiClient::new(OpenAiConfig::new(base, "gpt-4o-mini").with_api_key("sk-wrong")).unwrap();
    let e = bad
        .complete(ChatRequest::new(
            CallKind::Other,
            vec![ChatMessage::user("hi")],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.class(), "auth", "{e:?}");
    assert!(!e.is_retryable());
}
