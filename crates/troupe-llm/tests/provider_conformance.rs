//! The LLM provider conformance suite, one test per check: the
//! OpenAI-compatible client against a fake HTTP server (wiremock) playing
//! each scenario, and the scripted mock with the matching rule.

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod openai {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use serde_json::json;
    use troupe_core::llm::{ChatRequest, ChatResponse, LlmError, LlmProvider};
    use troupe_llm::{OpenAiClient, OpenAiConfig};
    use troupe_testkit::conformance::Fixture;
    use troupe_testkit::conformance::llm::{Scenario, Scripted};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    /// The client's timeout: a stalled server answers well after it.
    const TIMEOUT: Duration = Duration::from_millis(300);

    /// The client, with the fake server it talks to kept alive beside it.
    struct Served {
        _server: MockServer,
        client: OpenAiClient,
    }

    #[async_trait]
    impl LlmProvider for Served {
        fn name(&self) -> &str {
            self.client.name()
        }

        async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
            self.client.complete(request).await
        }
    }

    fn response(scenario: &Scenario) -> ResponseTemplate {
        match scenario {
            Scenario::Reply { text, usage } => ResponseTemplate::new(200).set_body_json(json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "test-model",
                "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "total_tokens": usage.total()},
            })),
            Scenario::RateLimited { retry_after } => ResponseTemplate::new(429)
                .insert_header("retry-after", retry_after.as_secs().to_string().as_str())
                .set_body_json(json!({"error": {"message": "slow down"}})),
            Scenario::ServerError { status } => {
                ResponseTemplate::new(*status).set_body_string("upstream failed")
            }
            Scenario::ContextTooLong => ResponseTemplate::new(400).set_body_json(json!({
                "error": {"code": "context_length_exceeded",
                    "message": "This model's maximum context length is 8192 tokens"}
            })),
            Scenario::Unauthorized => ResponseTemplate::new(401)
                .set_body_json(json!({"error": {"message": "invalid api key"}})),
            Scenario::BadRequest => ResponseTemplate::new(400)
                .set_body_json(json!({"error": {"message": "unknown parameter: frobnicate"}})),
            Scenario::EmptyReply => ResponseTemplate::new(200).set_body_json(json!({
                "id": "chatcmpl-2", "object": "chat.completion", "choices": []
            })),
            Scenario::Stall => ResponseTemplate::new(200)
                .set_delay(TIMEOUT * 20)
                .set_body_json(json!({})),
        }
    }

    struct FakeServer;

    #[async_trait]
    impl Scripted for FakeServer {
        async fn provider(&self, scenario: Scenario) -> Arc<dyn LlmProvider> {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .and(path("/v1/chat/completions"))
                .respond_with(response(&scenario))
                .mount(&server)
                .await;
            let mut config = OpenAiConfig::new(format!("{}/v1", server.uri()), "test-model");
            config.timeout = TIMEOUT;
            let client = OpenAiClient::new(config.with_api_key("sk-test")).unwrap();
            Arc::new(Served {
                _server: server,
                client,
            })
        }
    }

    async fn scripted(_check: &str) -> Option<Fixture<Arc<dyn Scripted>>> {
        Some(Fixture::new(Arc::new(FakeServer)))
    }

    troupe_testkit::llm_conformance!(scripted);
}

#[cfg(feature = "mock")]
mod mock {
    use std::sync::Arc;

    use async_trait::async_trait;
    use troupe_core::llm::LlmProvider;
    use troupe_llm::mock::{MockError, MockLlm, Rule};
    use troupe_testkit::conformance::Fixture;
    use troupe_testkit::conformance::llm::{Scenario, Scripted};

    struct Scripts;

    #[async_trait]
    impl Scripted for Scripts {
        async fn provider(&self, scenario: Scenario) -> Arc<dyn LlmProvider> {
            let rule = Rule::any();
            let rule = match scenario {
                Scenario::Reply { text, usage } => rule.reply(text).usage(usage),
                Scenario::RateLimited { retry_after } => rule.error(MockError::Http {
                    status: 429,
                    body: "slow down".into(),
                    retry_after_ms: Some(u64::try_from(retry_after.as_millis()).unwrap()),
                }),
                Scenario::ServerError { status } => rule.error(MockError::http(status)),
                Scenario::ContextTooLong => rule.error(MockError::ContextLength),
                Scenario::Unauthorized => rule.error(MockError::http(401)),
                Scenario::BadRequest => rule.error(MockError::http(400)),
                Scenario::EmptyReply => rule.error(MockError::Empty),
                Scenario::Stall => rule.error(MockError::Timeout),
            };
            Arc::new(MockLlm::builder().rule(rule).build().unwrap())
        }
    }

    async fn scripted(_check: &str) -> Option<Fixture<Arc<dyn Scripted>>> {
        Some(Fixture::new(Arc::new(Scripts)))
    }

    troupe_testkit::llm_conformance!(scripted);
}
