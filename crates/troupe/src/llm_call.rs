//! One LLM request made reliably enough for the orchestrator and the workers:
//! each call is cut by a timeout, and retryable errors are retried with
//! backoff (honouring `Retry-After`) up to a bound. The resilience issue turns
//! this into composable layers; the behaviour stays.

use std::time::Duration;

use troupe_core::llm::{ChatRequest, ChatResponse, LlmError, LlmProvider};

use crate::backoff;
use crate::config::LlmCallConfig;

/// The outcome of a request, with the errors met on the way to it.
#[derive(Debug)]
pub(crate) struct CallOutcome {
    /// The response, or the last error.
    pub(crate) result: Result<ChatResponse, LlmError>,
    /// Errors of earlier calls that were retried.
    pub(crate) retried: Vec<LlmError>,
}

/// Sends `request`, retrying what is worth retrying.
pub(crate) async fn call(
    llm: &dyn LlmProvider,
    config: &LlmCallConfig,
    request: ChatRequest,
) -> CallOutcome {
    let mut retried = Vec::new();
    let mut attempt = 1;
    loop {
        let result = match tokio::time::timeout(config.timeout, llm.complete(request.clone())).await
        {
            Ok(result) => result,
            Err(_) => Err(LlmError::Timeout(config.timeout)),
        };
        match result {
            Err(e) if e.is_retryable() && attempt < config.max_attempts => {
                let wait = backoff::delay(&config.retry, attempt, e.retry_after());
                tracing::warn!(
                    provider = llm.name(),
                    kind = request.meta.kind.as_str(),
                    error = %e,
                    attempt,
                    retry_in_ms = millis(wait),
                    "LLM call failed; retrying"
                );
                retried.push(e);
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            result => return CallOutcome { result, retried },
        }
    }
}

/// Times the prompt budget is halved after a context-length error.
const MAX_SHRINKS: u32 = 3;

/// Like [`call`], for a prompt built to fit a character budget: when the model
/// says the prompt is too long, the budget is halved and the request rebuilt,
/// up to three times (only if `shrinkable`: the prompt has material to cut).
pub(crate) async fn call_shrinking<F>(
    llm: &dyn LlmProvider,
    config: &LlmCallConfig,
    mut budget: usize,
    shrinkable: bool,
    build: F,
) -> CallOutcome
where
    F: Fn(usize) -> ChatRequest,
{
    let mut retried = Vec::new();
    let mut shrinks = 0;
    loop {
        let outcome = call(llm, config, build(budget)).await;
        retried.extend(outcome.retried);
        match outcome.result {
            Err(LlmError::ContextLength { .. }) if shrinkable && shrinks < MAX_SHRINKS => {
                shrinks += 1;
                budget /= 2;
                tracing::info!(
                    budget,
                    "prompt too long for the model; shortening the results in it"
                );
            }
            result => return CallOutcome { result, retried },
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
