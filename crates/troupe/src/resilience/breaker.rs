//! [`BreakerLayer`]: a circuit breaker ([`Circuit`]) around an LLM provider,
//! as a tower layer. While the circuit is open, calls fail at once with
//! [`LlmError::CircuitOpen`] without reaching the provider; the state is the
//! `multiagent_llm_circuit_state{provider}` gauge and a log event.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tower::{Layer, Service};
use troupe_core::llm::{ChatRequest, ChatResponse, LlmError};

use super::circuit::{Circuit, CircuitState};
use crate::config::BreakerConfig;
use crate::telemetry::metrics::LLM_CIRCUIT_STATE;

/// Records a call's outcome; a trial dropped unfinished frees the half-open slot.
struct Outcome {
    circuit: Arc<Circuit>,
    trial: bool,
    recorded: bool,
}

impl Outcome {
    fn record(mut self, outcome: &Result<ChatResponse, LlmError>) {
        let failed = matches!(outcome, Err(e) if counts_as_failure(e));
        self.circuit.record(failed, self.trial);
        self.recorded = true;
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if self.trial && !self.recorded {
            self.circuit.abandon_trial();
        }
    }
}

/// Failures that say the provider is unwell. A refused request (bad request,
/// prompt too long, credentials) or a rate limit is about the request or
/// the quota, not the provider's health.
fn counts_as_failure(e: &LlmError) -> bool {
    matches!(
        e,
        LlmError::Server { .. }
            | LlmError::Timeout(_)
            | LlmError::Transport(_)
            | LlmError::InvalidResponse { .. }
    )
}

/// Wraps a service in a circuit breaker; every service it makes shares one
/// breaker (one per provider).
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    circuit: Arc<Circuit>,
}

impl BreakerLayer {
    /// A breaker for `provider`, whose calls take at most `call_timeout`
    /// (a trial not back by then is deemed lost and another may go).
    pub fn new(provider: impl Into<String>, config: BreakerConfig, call_timeout: Duration) -> Self {
        Self {
            circuit: Arc::new(Circuit::new(
                LLM_CIRCUIT_STATE,
                "provider",
                provider,
                config,
                call_timeout,
            )),
        }
    }

    /// Where the breaker stands now (an open circuit past its reset time
    /// reports open until a call comes).
    pub fn state(&self) -> CircuitState {
        self.circuit.state()
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker {
            inner,
            circuit: self.circuit.clone(),
        }
    }
}

/// The service [`BreakerLayer`] makes.
#[derive(Debug, Clone)]
pub struct Breaker<S> {
    inner: S,
    circuit: Arc<Circuit>,
}

impl<S> Service<ChatRequest> for Breaker<S>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = LlmError>,
    S::Future: Send + 'static,
{
    type Response = ChatResponse;
    type Error = LlmError;
    type Future = BoxFuture<'static, Result<ChatResponse, LlmError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let trial = match self.circuit.admit() {
            Ok(trial) => trial,
            Err(retry_in) => {
                let provider = self.circuit.name().to_owned();
                return Box::pin(async move { Err(LlmError::CircuitOpen { provider, retry_in }) });
            }
        };
        let call = self.inner.call(request);
        let pending = Outcome {
            circuit: self.circuit.clone(),
            trial,
            recorded: false,
        };
        Box::pin(async move {
            let outcome = call.await;
            pending.record(&outcome);
            outcome
        })
    }
}
