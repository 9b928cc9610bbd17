//! Resilience around LLM providers, composed in one place ([`resilient`])
//! from [`LlmCallConfig`] as tower layers:
//!
//! ```text
//! fallback ─▶ [provider 1: breaker ─▶ concurrency ─▶ token budget ─▶ rate limit ─▶ timeout ─▶ HTTP]
//!          └▶ [provider 2: the same stack] ...
//! ```
//!
//! The retry *decision* is [`RetryPolicy`]; its *execution* is the runtime's
//! call loop (`llm_call`), which waits the policy's delay (honouring
//! `Retry-After` and an open circuit's reset time) between attempts.

mod breaker;
mod circuit;
mod fallback;
mod policy;
mod retrying;
mod stack;
mod tokens;

pub use breaker::{Breaker, BreakerLayer};
pub(crate) use circuit::Circuit;
pub use circuit::CircuitState;
pub use fallback::FallbackLlm;
pub use policy::{RetryPolicy, Retryable};
pub(crate) use retrying::{Retrying, retrying_stores};
pub use stack::{NoRuntime, ResilientLlm, resilient};
pub use tokens::{TokenBudget, TokenBudgetLayer};

use std::sync::Arc;

use troupe_core::llm::LlmProvider;

use crate::config::LlmCallConfig;

/// The runtime's LLM: `primary` then `fallbacks`, each behind its own layers.
pub(crate) fn compose(
    primary: Arc<dyn LlmProvider>,
    fallbacks: Vec<Arc<dyn LlmProvider>>,
    config: &LlmCallConfig,
) -> Result<Arc<dyn LlmProvider>, NoRuntime> {
    let first: Arc<dyn LlmProvider> = Arc::new(resilient(primary, config)?);
    if fallbacks.is_empty() {
        return Ok(first);
    }
    let mut rest: Vec<Arc<dyn LlmProvider>> = Vec::with_capacity(fallbacks.len());
    for provider in fallbacks {
        rest.push(Arc::new(resilient(provider, config)?));
    }
    Ok(Arc::new(FallbackLlm::from_first(first, rest)))
}
