//! [`RetryPolicy`]: whether and when to try again, apart from doing it.

use std::time::Duration;

use troupe_core::bus::BusError;
use troupe_core::llm::LlmError;
use troupe_core::store::StoreError;

use crate::backoff;
use crate::config::BackoffConfig;

/// The shortest wait for an operation that was refused untried.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// An error that says whether another attempt may succeed.
pub trait Retryable {
    /// Whether the same operation may succeed later.
    fn is_retryable(&self) -> bool;
    /// How long the other side asked to wait, if it did.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// False when the operation was refused before it was tried (an open
    /// circuit): waiting for it does not use up an attempt.
    fn was_attempted(&self) -> bool {
        true
    }
}

impl Retryable for LlmError {
    fn is_retryable(&self) -> bool {
        LlmError::is_retryable(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        LlmError::retry_after(self)
    }
    fn was_attempted(&self) -> bool {
        !matches!(self, LlmError::CircuitOpen { .. })
    }
}

impl Retryable for BusError {
    fn is_retryable(&self) -> bool {
        BusError::is_retryable(self)
    }
}

impl Retryable for StoreError {
    fn is_retryable(&self) -> bool {
        StoreError::is_retryable(self)
    }
}

/// How many attempts, and how long between them: exponential backoff with
/// jitter, capped, but never shorter than what the error asks for.
///
/// ```
/// use std::time::Duration;
/// use troupe::config::BackoffConfig;
/// use troupe::resilience::RetryPolicy;
/// use troupe_core::llm::LlmError;
///
/// let policy = RetryPolicy::new(3, BackoffConfig {
///     initial: Duration::from_millis(100),
///     max: Duration::from_secs(1),
///     multiplier: 2.0,
///     jitter: 0.0,
/// });
/// let busy = LlmError::Server { status: 503, body: String::new() };
/// assert_eq!(policy.decide(1, &busy), Some(Duration::from_millis(100)));
/// assert_eq!(policy.decide(2, &busy), Some(Duration::from_millis(200)));
/// assert_eq!(policy.decide(3, &busy), None); // the third attempt was the last
/// let refused = LlmError::Auth { status: 401, body: String::new() };
/// assert_eq!(policy.decide(1, &refused), None); // never worth another try
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: BackoffConfig,
}

impl RetryPolicy {
    /// At most `max_attempts` attempts in all, spaced by `backoff`.
    pub fn new(max_attempts: u32, backoff: BackoffConfig) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            backoff,
        }
    }

    /// After attempt `attempt` (from 1) failed with `error`: the wait before
    /// the next one, or `None` to stop.
    pub fn decide<E: Retryable + ?Sized>(&self, attempt: u32, error: &E) -> Option<Duration> {
        if !error.is_retryable() || attempt >= self.max_attempts {
            return None;
        }
        Some(backoff::delay(&self.backoff, attempt, error.retry_after()))
    }

    /// Runs `op` until it succeeds, fails for good or runs out of attempts,
    /// sleeping as [`decide`](Self::decide) says in between; `on_retry` hears
    /// of every error that is retried. An operation refused without being
    /// tried (an open circuit) is waited for as long as it asks and does not
    /// count as an attempt: bound the whole run with a timeout of your own
    /// (the runtime's subtask and task timeouts do).
    pub async fn run<T, E, F, Fut>(
        &self,
        mut op: F,
        mut on_retry: impl FnMut(u32, &E, Duration),
    ) -> Result<T, E>
    where
        E: Retryable,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 1;
        loop {
            match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) if !e.was_attempted() && e.is_retryable() => {
                    let wait = e
                        .retry_after()
                        .unwrap_or(self.backoff.initial)
                        .max(MIN_WAIT);
                    on_retry(attempt, &e, wait);
                    tokio::time::sleep(wait).await;
                }
                Err(e) => match self.decide(attempt, &e) {
                    Some(wait) => {
                        on_retry(attempt, &e, wait);
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                    None => return Err(e),
                },
            }
        }
    }
}
