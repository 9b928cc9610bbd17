//! [`TokenBudgetLayer`]: tokens per minute for one provider, as a tower
//! layer. Each call reserves its estimated tokens (prompt characters / 4 plus
//! the reply's `max_tokens`) from a bucket that refills continuously; when
//! the bucket is short, the call waits until the refill covers it (later
//! calls queue behind it).

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service};
use troupe_core::llm::{ChatRequest, ChatResponse, LlmError};

/// Characters per token in the estimate.
const CHARS_PER_TOKEN: usize = 4;
/// Reply tokens assumed when the request does not say.
const DEFAULT_REPLY_TOKENS: u32 = 512;

#[derive(Debug)]
struct Bucket {
    per_minute: f64,
    available: f64,
    at: Instant,
}

impl Bucket {
    /// Reserves `tokens` at once and says how long to wait before using
    /// them: the balance may go below zero, so callers queue in the order
    /// they came and a large request is not starved by small ones.
    fn reserve(&mut self, tokens: f64) -> Duration {
        let now = Instant::now();
        let refill = (now - self.at).as_secs_f64() * self.per_minute / 60.0;
        self.available = (self.available + refill).min(self.per_minute);
        self.at = now;
        self.available -= tokens;
        if self.available >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-self.available * 60.0 / self.per_minute)
                .unwrap_or(Duration::MAX)
        }
    }
}

/// Limits the tokens per minute of every service it makes (they share one bucket).
#[derive(Debug, Clone)]
pub struct TokenBudgetLayer {
    bucket: Arc<Mutex<Bucket>>,
}

impl TokenBudgetLayer {
    /// A budget of `per_minute` tokens (at least 1).
    pub fn new(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        Self {
            bucket: Arc::new(Mutex::new(Bucket {
                per_minute,
                available: per_minute,
                at: Instant::now(),
            })),
        }
    }
}

impl<S> Layer<S> for TokenBudgetLayer {
    type Service = TokenBudget<S>;

    fn layer(&self, inner: S) -> TokenBudget<S> {
        TokenBudget {
            inner,
            bucket: self.bucket.clone(),
        }
    }
}

/// The service [`TokenBudgetLayer`] makes.
#[derive(Debug, Clone)]
pub struct TokenBudget<S> {
    inner: S,
    bucket: Arc<Mutex<Bucket>>,
}

/// The tokens a request is expected to cost.
fn estimate(request: &ChatRequest) -> f64 {
    let chars: usize = request
        .messages
        .iter()
        .map(|m| m.content.chars().count())
        .sum();
    let prompt = chars.div_ceil(CHARS_PER_TOKEN);
    let reply = request.max_tokens.unwrap_or(DEFAULT_REPLY_TOKENS);
    // Estimates are far below 2^53: exact as f64.
    #[allow(clippy::cast_precision_loss)]
    let prompt = prompt as f64;
    prompt + f64::from(reply)
}

impl<S> Service<ChatRequest> for TokenBudget<S>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = LlmError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ChatResponse;
    type Error = LlmError;
    type Future = BoxFuture<'static, Result<ChatResponse, LlmError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        // Readiness of the inner service is awaited in the call, after the wait.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let tokens = estimate(&request);
        let bucket = self.bucket.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let wait = bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .reserve(tokens);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            tower::ServiceExt::oneshot(inner, request).await
        })
    }
}
