//! [`BreakerLayer`]: a circuit breaker as a tower layer. Closed, it passes
//! calls and counts failures in a row; at the threshold it opens and fails
//! every call at once with [`LlmError::CircuitOpen`]; after the reset time it
//! is half-open: one trial call goes through (the others still fail fast),
//! and its outcome closes or reopens the circuit. Every change is a log event
//! and the `multiagent_llm_circuit_state` gauge.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service};
use troupe_core::llm::{ChatRequest, ChatResponse, LlmError};

use crate::config::BreakerConfig;
use crate::telemetry::metrics::LLM_CIRCUIT_STATE;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls pass; failures in a row are counted.
    Closed,
    /// Calls fail at once until the reset time.
    Open,
    /// One trial call decides.
    HalfOpen,
}

impl CircuitState {
    /// The gauge's value: 0 closed, 1 half-open, 2 open.
    fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_running: bool },
}

#[derive(Debug)]
struct Shared {
    provider: String,
    config: BreakerConfig,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state whole; a poisoned lock is safe to reuse.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, state: CircuitState) {
        ::metrics::gauge!(LLM_CIRCUIT_STATE, "provider" => self.provider.clone())
            .set(state.gauge());
    }

    /// Lets a call through (`Ok(is_trial)`) or says how long the circuit stays open.
    fn admit(&self) -> Result<bool, std::time::Duration> {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(false),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } => {
                *state = State::HalfOpen {
                    trial_running: true,
                };
                drop(state);
                tracing::info!(provider = %self.provider, "circuit half-open: one trial call");
                self.publish(CircuitState::HalfOpen);
                Ok(true)
            }
            State::HalfOpen {
                trial_running: true,
            } => Err(self
                .config
                .reset_timeout
                .min(std::time::Duration::from_secs(1))),
            State::HalfOpen {
                trial_running: false,
            } => {
                *state = State::HalfOpen {
                    trial_running: true,
                };
                Ok(true)
            }
        }
    }

    /// Takes a call's outcome into account.
    fn record(&self, outcome: &Result<ChatResponse, LlmError>, trial: bool) {
        let failed = matches!(outcome, Err(e) if counts_as_failure(e));
        let mut state = self.lock();
        let before = current(&state);
        let reopen = State::Open {
            until: Instant::now() + self.config.reset_timeout,
        };
        *state = match (*state, failed, trial) {
            (_, false, true) => State::Closed { failures: 0 },
            (_, true, true) => reopen,
            (State::Closed { .. }, false, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, true, false) => {
                if failures + 1 >= self.config.failure_threshold {
                    reopen
                } else {
                    State::Closed {
                        failures: failures + 1,
                    }
                }
            }
            // A call let through before the circuit opened says nothing new.
            (unchanged, _, false) => unchanged,
        };
        let after = current(&state);
        drop(state);
        if before != after {
            match after {
                CircuitState::Open => tracing::warn!(
                    provider = %self.provider,
                    threshold = self.config.failure_threshold,
                    reset_after_ms = u64::try_from(self.config.reset_timeout.as_millis()).unwrap_or(u64::MAX),
                    "circuit opened: calls fail fast until the reset time"
                ),
                CircuitState::Closed => tracing::info!(provider = %self.provider, "circuit closed"),
                CircuitState::HalfOpen => {}
            }
            self.publish(after);
        }
    }

    /// A trial call was dropped before it ended: let the next call try.
    fn abandon_trial(&self) {
        let mut state = self.lock();
        if matches!(*state, State::HalfOpen { .. }) {
            *state = State::HalfOpen {
                trial_running: false,
            };
        }
    }
}

fn current(state: &State) -> CircuitState {
    match state {
        State::Closed { .. } => CircuitState::Closed,
        State::Open { .. } => CircuitState::Open,
        State::HalfOpen { .. } => CircuitState::HalfOpen,
    }
}

/// Records a call's outcome; a trial dropped unfinished frees the half-open slot.
struct Outcome {
    shared: Arc<Shared>,
    trial: bool,
    recorded: bool,
}

impl Outcome {
    fn record(mut self, outcome: &Result<ChatResponse, LlmError>) {
        self.shared.record(outcome, self.trial);
        self.recorded = true;
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if self.trial && !self.recorded {
            self.shared.abandon_trial();
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
    shared: Arc<Shared>,
}

impl BreakerLayer {
    /// A breaker for `provider`.
    pub fn new(provider: impl Into<String>, config: BreakerConfig) -> Self {
        let shared = Arc::new(Shared {
            provider: provider.into(),
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        });
        shared.publish(CircuitState::Closed);
        Self { shared }
    }

    /// Where the breaker stands now (an open circuit past its reset time
    /// reports open until a call comes).
    pub fn state(&self) -> CircuitState {
        current(&self.shared.lock())
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`BreakerLayer`] makes.
#[derive(Debug, Clone)]
pub struct Breaker<S> {
    inner: S,
    shared: Arc<Shared>,
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
        let trial = match self.shared.admit() {
            Ok(trial) => trial,
            Err(retry_in) => {
                let provider = self.shared.provider.clone();
                return Box::pin(async move { Err(LlmError::CircuitOpen { provider, retry_in }) });
            }
        };
        let call = self.inner.call(request);
        let pending = Outcome {
            shared: self.shared.clone(),
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
