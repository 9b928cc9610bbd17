//! [`FallbackLlm`]: an ordered list of providers; when one's circuit is open
//! or it refuses a request for good, the next is tried.

use std::sync::Arc;

use async_trait::async_trait;
use troupe_core::llm::{ChatRequest, ChatResponse, LlmError, LlmProvider};

/// Tries its providers in order. Retryable failures (a 503, a timeout) are
/// returned for the caller to retry: they open the first provider's circuit
/// soon enough, and from then on calls go to the next at once.
///
/// ```
/// use std::sync::Arc;
/// use troupe::resilience::FallbackLlm;
/// use troupe_core::llm::LlmProvider;
/// use troupe_llm::mock::MockLlm;
///
/// let llm = FallbackLlm::new(vec![Arc::new(MockLlm::builtin()), Arc::new(MockLlm::builtin())]).unwrap();
/// assert_eq!(llm.name(), "mock");
/// ```
pub struct FallbackLlm {
    providers: Vec<Arc<dyn LlmProvider>>,
}

impl std::fmt::Debug for FallbackLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.providers.iter().map(|p| p.name()).collect();
        f.debug_struct("FallbackLlm")
            .field("providers", &names)
            .finish()
    }
}

impl FallbackLlm {
    /// The providers, first choice first; `None` if there is none.
    pub fn new(providers: Vec<Arc<dyn LlmProvider>>) -> Option<Self> {
        (!providers.is_empty()).then_some(Self { providers })
    }

    /// `first`, then `rest` in order.
    pub fn from_first(
        first: Arc<dyn LlmProvider>,
        rest: impl IntoIterator<Item = Arc<dyn LlmProvider>>,
    ) -> Self {
        let mut providers = vec![first];
        providers.extend(rest);
        Self { providers }
    }
}

/// Whether the next provider may do better than the one that returned `e`.
fn try_next(e: &LlmError) -> bool {
    matches!(
        e,
        LlmError::CircuitOpen { .. } | LlmError::Auth { .. } | LlmError::BadRequest { .. }
    )
}

fn no_provider() -> LlmError {
    LlmError::Transport("no LLM provider configured".into())
}

/// Of two refusals, the open circuit that reopens first (any other error wins over none).
fn sooner(kept: Option<LlmError>, new: LlmError) -> Option<LlmError> {
    match (&kept, &new) {
        (
            Some(LlmError::CircuitOpen { retry_in: a, .. }),
            LlmError::CircuitOpen { retry_in: b, .. },
        ) if a <= b => kept,
        _ => Some(new),
    }
}

#[async_trait]
impl LlmProvider for FallbackLlm {
    fn name(&self) -> &str {
        self.providers.first().map_or("none", |p| p.name())
    }

    fn model(&self) -> Option<&str> {
        self.providers.first().and_then(|p| p.model())
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        // When every circuit is open, the caller waits for the first to reopen.
        let mut soonest: Option<LlmError> = None;
        for (i, provider) in self.providers.iter().enumerate() {
            match provider.complete(request.clone()).await {
                Err(e) if try_next(&e) && i + 1 < self.providers.len() => {
                    tracing::info!(
                        provider = provider.name(),
                        next = self.providers[i + 1].name(),
                        error = %e,
                        "LLM provider unavailable; trying the next"
                    );
                    soonest = sooner(soonest, e);
                }
                Err(e @ LlmError::CircuitOpen { .. }) => {
                    return Err(sooner(soonest, e).unwrap_or_else(no_provider));
                }
                outcome => return outcome,
            }
        }
        Err(soonest.unwrap_or_else(no_provider))
    }
}
