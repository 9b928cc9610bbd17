//! One LLM request made reliably enough for the orchestrator and the workers:
//! each call is cut by the provider stack's timeout, and retryable errors are retried as the
//! [`RetryPolicy`] decides (backoff, `Retry-After`, an open circuit's reset
//! time) up to a bound. The provider itself sits behind the layers of
//! [`crate::resilience`] (breaker, limits, timeout, fallback).

use std::time::Duration;

use tracing::Instrument as _;
use troupe_core::llm::{ChatRequest, ChatResponse, LlmError, LlmProvider};

use crate::config::LlmCallConfig;
use crate::resilience::RetryPolicy;
use crate::telemetry::events::{LlmCallAnswered, LlmCallFailed, emit};

/// The outcome of a request, with the errors met on the way to it.
#[derive(Debug)]
pub(crate) struct CallOutcome {
    /// The response, or the last error.
    pub(crate) result: Result<ChatResponse, LlmError>,
    /// Errors of earlier calls that were retried.
    pub(crate) retried: Vec<LlmError>,
}

/// Sends `request`, retrying what the retry policy says is worth retrying.
pub(crate) async fn call(
    llm: &dyn LlmProvider,
    config: &LlmCallConfig,
    request: ChatRequest,
) -> CallOutcome {
    let policy = RetryPolicy::new(config.max_attempts, config.retry.clone());
    let mut retried = Vec::new();
    let result = policy
        .run(
            |attempt| request_once(llm, &request, attempt),
            |attempt, e: &LlmError, wait| {
                tracing::warn!(
                    provider = llm.name(),
                    kind = request.meta.kind.as_str(),
                    error = %e,
                    attempt,
                    retry_in_ms = millis(wait),
                    "LLM call failed; retrying"
                );
                // A refusal by an open circuit was never sent: not an error to report.
                if !matches!(e, LlmError::CircuitOpen { .. }) {
                    retried.push(e.clone());
                }
            },
        )
        .await;
    CallOutcome { result, retried }
}

/// One request under the call timeout, in its `gen_ai.chat` span, counted in the metrics.
async fn request_once(
    llm: &dyn LlmProvider,
    request: &ChatRequest,
    attempt: u32,
) -> Result<ChatResponse, LlmError> {
    let kind = request.meta.kind.as_str();
    let model = llm.model().unwrap_or("unknown");
    // Debug level: traces keep it, log lines take their context from the
    // task and subtask spans around it (cheaper on every call).
    let span = tracing::debug_span!(
        "gen_ai.chat",
        otel.name = %format_args!("chat {model}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = "chat",
        gen_ai.system = llm.name(),
        gen_ai.provider.name = llm.name(),
        gen_ai.request.model = model,
        gen_ai.request.max_tokens = request.max_tokens.map(i64::from),
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        error.type = tracing::field::Empty,
        call_kind = kind,
        attempt = i64::from(attempt),
    );
    let started = std::time::Instant::now();
    // The call timeout is a layer of the provider's stack (`resilience::resilient`).
    let result = llm.complete(request.clone()).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    match &result {
        Ok(reply) => {
            span.record("gen_ai.response.model", reply.model.as_str());
            if let Some(reason) = &reply.finish_reason {
                span.record("gen_ai.response.finish_reasons", reason.as_str());
            }
            // OpenTelemetry has no unsigned integers: as i64, or they arrive as strings.
            span.record(
                "gen_ai.usage.input_tokens",
                otel_int(reply.usage.prompt_tokens),
            );
            span.record(
                "gen_ai.usage.output_tokens",
                otel_int(reply.usage.completion_tokens),
            );
            emit(LlmCallAnswered {
                kind,
                elapsed,
                usage: reply.usage,
            });
        }
        // Refused by an open circuit: never sent; the circuit's gauge tells.
        Err(LlmError::CircuitOpen { .. }) => {
            span.record("error.type", "circuit_open");
        }
        Err(e) => {
            let class = e.class();
            span.record("error.type", class);
            span.record("otel.status_code", "ERROR");
            emit(LlmCallFailed {
                kind,
                class,
                elapsed,
            });
        }
    }
    result
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

fn otel_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
