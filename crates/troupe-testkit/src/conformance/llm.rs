//! The [`LlmProvider`] conformance suite: whatever the provider, the
//! runtime must get the answer with its token usage, and every failure as an
//! [`LlmError`] that says what to do next (retry, wait, shorten the prompt,
//! give up).
//!
//! A provider under test is [`Scripted`]: told what its server does for the
//! next request (answer, refuse, fail, stall), it gives a provider that meets
//! it: the OpenAI client against a fake HTTP server, the scripted mock with
//! the matching rule.

// A test suite: its assertions are meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use troupe_core::llm::{CallKind, ChatMessage, ChatRequest, LlmError, LlmProvider};
use troupe_core::task::Usage;

/// What the provider's server does with the next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// Answers `text`, having spent `usage`.
    Reply {
        /// The answer.
        text: String,
        /// The tokens it reports.
        usage: Usage,
    },
    /// Refuses for now (HTTP 429), asking to wait `retry_after`.
    RateLimited {
        /// The wait asked for.
        retry_after: Duration,
    },
    /// Fails on its side (HTTP `status`, 500 to 599).
    ServerError {
        /// The status.
        status: u16,
    },
    /// Says the prompt does not fit the model's context.
    ContextTooLong,
    /// Refuses the credentials (HTTP 401).
    Unauthorized,
    /// Refuses the request as malformed (HTTP 400).
    BadRequest,
    /// Answers "success" with no content.
    EmptyReply,
    /// Does not answer within the provider's timeout.
    Stall,
}

/// A provider that can be told what its server will do.
#[async_trait]
pub trait Scripted: Send + Sync {
    /// A provider whose server does `scenario` with every request.
    async fn provider(&self, scenario: Scenario) -> Arc<dyn LlmProvider>;
}

/// Expands to one `#[tokio::test]` per check of [`LlmSuite`], each on the
/// [`Scripted`] provider of the fixture that `$make(check_name)` returns.
#[macro_export]
macro_rules! llm_conformance {
    ($make:path) => {
        $crate::__conformance_tests!($make, |fixture| (
            $crate::conformance::llm::LlmSuite,
            fixture.subject.clone(),
        );
            answers_with_content_and_usage,
            asks_to_wait_after_a_rate_limit,
            retries_server_errors,
            says_the_prompt_is_too_long,
            refuses_bad_credentials_for_good,
            refuses_bad_requests_for_good,
            retries_an_empty_reply,
            times_out_as_retryable,
        );
    };
}

/// The LLM provider suite.
#[derive(Debug, Clone, Copy)]
pub struct LlmSuite;

fn request() -> ChatRequest {
    ChatRequest::new(
        CallKind::Work,
        vec![
            ChatMessage::system("You are a test."),
            ChatMessage::user("Say hello — 你好 ✓"),
        ],
    )
}

/// The error `scenario` gives, checked to be one.
async fn failure(scripted: &dyn Scripted, scenario: Scenario, check: &str) -> LlmError {
    let provider = scripted.provider(scenario).await;
    match provider.complete(request()).await {
        Ok(reply) => panic!("{check}: expected an error, got {reply:?}"),
        Err(e) => e,
    }
}

impl LlmSuite {
    /// An answer comes with its text whole and the usage the server reported.
    pub async fn answers_with_content_and_usage(&self, scripted: Arc<dyn Scripted>) {
        let check = "answers_with_content_and_usage";
        let usage = Usage {
            prompt_tokens: 12,
            completion_tokens: 5,
        };
        let text = "Bonjour — 世界 ✓\nsecond line".to_owned();
        let provider = scripted
            .provider(Scenario::Reply {
                text: text.clone(),
                usage,
            })
            .await;
        let reply = provider.complete(request()).await.unwrap();
        assert_eq!(reply.content, text, "{check}");
        assert_eq!(reply.usage, usage, "{check}");
    }

    /// A rate limit is worth another try, after the wait the server asked for.
    pub async fn asks_to_wait_after_a_rate_limit(&self, scripted: Arc<dyn Scripted>) {
        let check = "asks_to_wait_after_a_rate_limit";
        let wait = Duration::from_secs(2);
        let e = failure(
            scripted.as_ref(),
            Scenario::RateLimited { retry_after: wait },
            check,
        )
        .await;
        assert_eq!(e.class(), "rate_limited", "{check}: {e}");
        assert!(e.is_retryable(), "{check}: {e}");
        assert_eq!(e.retry_after(), Some(wait), "{check}: {e}");
    }

    /// A server error is worth another try.
    pub async fn retries_server_errors(&self, scripted: Arc<dyn Scripted>) {
        let check = "retries_server_errors";
        for status in [500, 503] {
            let e = failure(scripted.as_ref(), Scenario::ServerError { status }, check).await;
            assert_eq!(e.class(), "server", "{check}: {status}: {e}");
            assert!(e.is_retryable(), "{check}: {status}: {e}");
        }
    }

    /// A prompt too long for the model says so (the runtime then shortens it).
    pub async fn says_the_prompt_is_too_long(&self, scripted: Arc<dyn Scripted>) {
        let check = "says_the_prompt_is_too_long";
        let e = failure(scripted.as_ref(), Scenario::ContextTooLong, check).await;
        assert_eq!(e.class(), "context_length", "{check}: {e}");
    }

    /// Refused credentials are not worth another try.
    pub async fn refuses_bad_credentials_for_good(&self, scripted: Arc<dyn Scripted>) {
        let check = "refuses_bad_credentials_for_good";
        let e = failure(scripted.as_ref(), Scenario::Unauthorized, check).await;
        assert_eq!(e.class(), "auth", "{check}: {e}");
        assert!(!e.is_retryable(), "{check}: {e}");
    }

    /// A request refused as malformed is not worth another try.
    pub async fn refuses_bad_requests_for_good(&self, scripted: Arc<dyn Scripted>) {
        let check = "refuses_bad_requests_for_good";
        let e = failure(scripted.as_ref(), Scenario::BadRequest, check).await;
        assert_eq!(e.class(), "bad_request", "{check}: {e}");
        assert!(!e.is_retryable(), "{check}: {e}");
    }

    /// A "success" with nothing in it is an error worth another try.
    pub async fn retries_an_empty_reply(&self, scripted: Arc<dyn Scripted>) {
        let check = "retries_an_empty_reply";
        let e = failure(scripted.as_ref(), Scenario::EmptyReply, check).await;
        assert_eq!(e.class(), "invalid_response", "{check}: {e}");
        assert!(e.is_retryable(), "{check}: {e}");
    }

    /// A server that does not answer in time is a timeout, worth another try.
    pub async fn times_out_as_retryable(&self, scripted: Arc<dyn Scripted>) {
        let check = "times_out_as_retryable";
        let e = failure(scripted.as_ref(), Scenario::Stall, check).await;
        assert_eq!(e.class(), "timeout", "{check}: {e}");
        assert!(e.is_retryable(), "{check}: {e}");
    }
}
