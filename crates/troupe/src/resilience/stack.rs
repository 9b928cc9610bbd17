//! [`resilient`]: one provider wrapped in its layers, as configured.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tower::util::BoxCloneService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt as _};
use troupe_core::llm::{ChatRequest, ChatResponse, LlmError, LlmProvider};

use super::breaker::BreakerLayer;
use super::circuit::CircuitState;
use super::tokens::TokenBudgetLayer;
use crate::config::LlmCallConfig;

/// Requests waiting for a rate-limited provider before callers wait to queue.
const RATE_QUEUE: usize = 4_096;

type LlmService = BoxCloneService<ChatRequest, ChatResponse, LlmError>;

/// A provider as a tower service.
#[derive(Clone)]
struct ProviderService(Arc<dyn LlmProvider>);

impl Service<ChatRequest> for ProviderService {
    type Response = ChatResponse;
    type Error = LlmError;
    type Future = BoxFuture<'static, Result<ChatResponse, LlmError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let provider = self.0.clone();
        Box::pin(async move { provider.complete(request).await })
    }
}

/// Back to an [`LlmError`] from what tower's layers return.
fn llm_error(e: BoxError, timeout: Duration) -> LlmError {
    match e.downcast::<LlmError>() {
        Ok(e) => *e,
        Err(e) if e.is::<tower::timeout::error::Elapsed>() => LlmError::Timeout(timeout),
        Err(e) => LlmError::Transport(format!("the call could not be made: {e}")),
    }
}

/// Boxes `service`, mapping tower's errors back to [`LlmError`].
fn boxed<S>(service: S, timeout: Duration) -> LlmService
where
    S: Service<ChatRequest, Response = ChatResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    BoxCloneService::new(service.map_err(move |e: S::Error| llm_error(e.into(), timeout)))
}

/// A provider behind its breaker, limits and timeout. An [`LlmProvider`] itself.
pub struct ResilientLlm {
    name: String,
    model: Option<String>,
    service: Mutex<LlmService>,
    breaker: Option<BreakerLayer>,
}

impl std::fmt::Debug for ResilientLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientLlm")
            .field("name", &self.name)
            .field("circuit", &self.circuit())
            .finish_non_exhaustive()
    }
}

impl ResilientLlm {
    /// Where the provider's breaker stands (`Closed` when it has none).
    pub fn circuit(&self) -> CircuitState {
        self.breaker
            .as_ref()
            .map_or(CircuitState::Closed, BreakerLayer::state)
    }
}

/// Wraps `provider` in the layers `config` asks for, outermost first: the
/// circuit breaker, the concurrency limit, the token budget, the rate limit
/// (innermost of the limits, so that it spaces the calls actually sent),
/// then the call timeout. The timeout bounds the provider's answer; time
/// spent queueing for the limits is bounded by the caller's own deadlines
/// (the runtime's subtask and task timeouts). With a rate limit it must be
/// called inside a tokio runtime (the limit's queue runs on it).
///
/// ```
/// use std::sync::Arc;
/// use troupe::config::LlmCallConfig;
/// use troupe::resilience::resilient;
/// use troupe_core::llm::LlmProvider;
/// use troupe_llm::mock::MockLlm;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let mut config = LlmCallConfig::default();
/// config.limits.max_concurrent = 4;
/// config.limits.requests_per_second = 10;
/// let llm = resilient(Arc::new(MockLlm::builtin()), &config).unwrap();
/// assert_eq!(llm.name(), "mock");
/// # });
/// ```
pub fn resilient(
    provider: Arc<dyn LlmProvider>,
    config: &LlmCallConfig,
) -> Result<ResilientLlm, NoRuntime> {
    let timeout = config.timeout();
    let name = provider.name().to_owned();
    let model = provider.model().map(str::to_owned);
    let limits = &config.limits;
    let mut service = boxed(
        ServiceBuilder::new()
            .timeout(timeout)
            .service(ProviderService(provider)),
        timeout,
    );
    if limits.requests_per_second > 0 {
        // tower's rate limit is one service's state: a buffer shares it; its
        // worker runs on the current runtime.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(NoRuntime);
        }
        let limited = ServiceBuilder::new()
            .buffer(RATE_QUEUE)
            .rate_limit(
                u64::from(limits.requests_per_second),
                Duration::from_secs(1),
            )
            .service(service);
        service = boxed(limited, timeout);
    }
    if limits.tokens_per_minute > 0 {
        let budget = TokenBudgetLayer::new(limits.tokens_per_minute);
        service = boxed(
            ServiceBuilder::new().layer(budget).service(service),
            timeout,
        );
    }
    if limits.max_concurrent > 0 {
        let max = usize::try_from(limits.max_concurrent).unwrap_or(usize::MAX);
        service = boxed(
            ServiceBuilder::new()
                .concurrency_limit(max)
                .service(service),
            timeout,
        );
    }
    // The label names the model too: two providers of one kind stay apart.
    let label = match &model {
        Some(m) => format!("{name}/{m}"),
        None => name.clone(),
    };
    let breaker = config
        .breaker
        .enabled
        .then(|| BreakerLayer::new(label, config.breaker.clone(), timeout));
    if let Some(layer) = &breaker {
        service = boxed(
            ServiceBuilder::new().layer(layer.clone()).service(service),
            timeout,
        );
    }
    Ok(ResilientLlm {
        name,
        model,
        service: Mutex::new(service),
        breaker,
    })
}

/// [`resilient`] was called outside a tokio runtime with a rate limit configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the LLM rate limit needs a tokio runtime: build the runtime inside one")]
pub struct NoRuntime;

#[async_trait]
impl LlmProvider for ResilientLlm {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let service = self
            .service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        service.oneshot(request).await
    }
}
