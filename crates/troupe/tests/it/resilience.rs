//! The resilience layers with paused tokio time and the mock LLM's errors:
//! retry delays and limits, `Retry-After`, the circuit breaker's states, the
//! call timeout, the rate, token and concurrency limits, and fallback. Whole
//! runs over a flaky provider are in `flaky_runs`; store and bus faults in
//! `faults`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use troupe::config::{BackoffConfig, LlmCallConfig};
use troupe::resilience::{CircuitState, FallbackLlm, RetryPolicy, resilient};
use troupe_core::llm::{CallKind, ChatMessage, ChatRequest, LlmError, LlmProvider};
use troupe_llm::mock::{MockError, MockLlm, Rule};

fn request() -> ChatRequest {
    ChatRequest::new(CallKind::Work, vec![ChatMessage::user("Say something")])
}

fn backoff(initial_ms: u64, max_ms: u64) -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(initial_ms),
        max: Duration::from_millis(max_ms),
        multiplier: 2.0,
        jitter: 0.0,
    }
}

/// A call configuration with no breaker and no limits unless a test adds them.
fn plain() -> LlmCallConfig {
    let mut c = LlmCallConfig::default();
    c.breaker.enabled = false;
    c
}

/// When each recorded call started, relative to `t0`, in milliseconds.
fn starts_ms(llm: &MockLlm, t0: Instant) -> Vec<u128> {
    llm.calls()
        .iter()
        .map(|c| (c.started - t0).as_millis())
        .collect()
}

fn failing(error: MockError, times: u32) -> MockLlm {
    MockLlm::builder()
        .rule(Rule::any().error(error).times(times))
        .record()
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn retries_wait_the_configured_delays_and_stop_at_the_limit() {
    let llm = Arc::new(failing(MockError::http(503), 100));
    let stack = resilient(llm.clone(), &plain()).unwrap();
    let policy = RetryPolicy::new(4, backoff(100, 250));
    let t0 = Instant::now();
    let mut retried = Vec::new();
    let result = policy
        .run(
            |_| stack.complete(request()),
            |n, _, wait| retried.push((n, wait)),
        )
        .await;
    assert!(matches!(result, Err(LlmError::Server { status: 503, .. })));
    // 4 attempts, 100 ms, 200 ms, then 250 ms (the cap) apart.
    assert_eq!(starts_ms(&llm, t0), vec![0, 100, 300, 550]);
    assert_eq!(retried.len(), 3);

    // A permanent error is not retried.
    let llm = Arc::new(failing(MockError::http(401), 100));
    let stack = resilient(llm.clone(), &plain()).unwrap();
    let result = policy
        .run(|_| stack.complete(request()), |_, _, _| {})
        .await;
    assert!(matches!(result, Err(LlmError::Auth { .. })));
    assert_eq!(llm.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let llm = Arc::new(
        MockLlm::builder()
            .rule(
                Rule::any()
                    .error(MockError::Http {
                        status: 429,
                        body: "slow down".into(),
                        retry_after_ms: Some(7_000),
                    })
                    .times(1),
            )
            .record()
            .build()
            .unwrap(),
    );
    let stack = resilient(llm.clone(), &plain()).unwrap();
    let t0 = Instant::now();
    let reply = RetryPolicy::new(3, backoff(100, 1_000))
        .run(|_| stack.complete(request()), |_, _, _| {})
        .await;
    assert!(reply.is_ok());
    assert_eq!(
        starts_ms(&llm, t0),
        vec![0, 7_000],
        "the server's 7 s, not the 100 ms backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_fails_fast_half_opens_and_closes() {
    // 3 failures, then answers.
    let llm = Arc::new(failing(MockError::http(500), 3));
    let mut c = LlmCallConfig::default();
    c.breaker.failure_threshold = 3;
    c.breaker.reset_timeout = Duration::from_secs(30);
    let stack = resilient(llm.clone(), &c).unwrap();
    for _ in 0..3 {
        assert!(matches!(
            stack.complete(request()).await,
            Err(LlmError::Server { .. })
        ));
    }
    assert_eq!(stack.circuit(), CircuitState::Open);

    // Open: fails at once, without calling the provider.
    let t0 = Instant::now();
    match stack.complete(request()).await {
        Err(LlmError::CircuitOpen { retry_in, .. }) => {
            assert_eq!(retry_in, Duration::from_secs(30));
        }
        other => panic!("expected a fast failure, got {other:?}"),
    }
    assert_eq!(Instant::now(), t0, "no time passed");
    assert_eq!(llm.calls().len(), 3);
    tokio::time::advance(Duration::from_secs(10)).await;
    match stack.complete(request()).await {
        Err(e @ LlmError::CircuitOpen { .. }) => {
            assert_eq!(e.retry_after(), Some(Duration::from_secs(20)));
            assert!(e.is_retryable());
        }
        other => panic!("still open: {other:?}"),
    }

    // After the reset time one trial goes through; it succeeds and closes the circuit.
    tokio::time::advance(Duration::from_secs(20)).await;
    assert!(stack.complete(request()).await.is_ok());
    assert_eq!(stack.circuit(), CircuitState::Closed);
    assert_eq!(llm.calls().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_reopens_and_calls_during_the_trial_fail_fast() {
    // 2 failures open it; the first trial fails; the second trial (slow) succeeds.
    let llm = Arc::new(
        MockLlm::builder()
            .rule(Rule::any().error(MockError::Timeout).times(3))
            .rule(Rule::any().delay(Duration::from_secs(2)).times(1))
            .record()
            .build()
            .unwrap(),
    );
    let mut c = LlmCallConfig::default();
    c.breaker.failure_threshold = 2;
    c.breaker.reset_timeout = Duration::from_secs(5);
    let stack = Arc::new(resilient(llm.clone(), &c).unwrap());
    for _ in 0..2 {
        assert!(stack.complete(request()).await.is_err());
    }
    assert_eq!(stack.circuit(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(matches!(
        stack.complete(request()).await,
        Err(LlmError::Timeout(_))
    ));
    assert_eq!(
        stack.circuit(),
        CircuitState::Open,
        "the failed trial reopened it"
    );
    assert!(matches!(
        stack.complete(request()).await,
        Err(LlmError::CircuitOpen { .. })
    ));

    tokio::time::advance(Duration::from_secs(5)).await;
    let trial = tokio::spawn({
        let stack = stack.clone();
        async move { stack.complete(request()).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(stack.circuit(), CircuitState::HalfOpen);
    assert!(
        matches!(
            stack.complete(request()).await,
            Err(LlmError::CircuitOpen { .. })
        ),
        "one trial at a time"
    );
    assert!(trial.await.unwrap().is_ok());
    assert_eq!(stack.circuit(), CircuitState::Closed);
    assert_eq!(llm.calls().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_hangs_is_cut_by_its_timeout() {
    let llm = Arc::new(MockLlm::builder().rule(Rule::any().hang()).build().unwrap());
    let mut c = plain();
    c.timeout = Some(Duration::from_secs(10));
    let stack = resilient(llm, &c).unwrap();
    let t0 = Instant::now();
    let result = stack.complete(request()).await;
    assert!(
        matches!(result, Err(LlmError::Timeout(d)) if d == Duration::from_secs(10)),
        "{result:?}"
    );
    assert_eq!(Instant::now() - t0, Duration::from_secs(10));
}

/// Starts `n` calls at once and waits for all of them.
async fn burst(stack: &Arc<troupe::resilience::ResilientLlm>, n: usize) {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let stack = stack.clone();
            tokio::spawn(async move { stack.complete(request()).await })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap().is_ok());
    }
}

#[tokio::test(start_paused = true)]
async fn the_rate_limiter_spaces_calls() {
    let llm = Arc::new(MockLlm::builder().record().build().unwrap());
    let mut c = plain();
    c.limits.requests_per_second = 2;
    // With a concurrency limit too, the rate still spaces the calls sent.
    c.limits.max_concurrent = 3;
    let stack = Arc::new(resilient(llm.clone(), &c).unwrap());
    let t0 = Instant::now();
    burst(&stack, 6).await;
    let mut starts = starts_ms(&llm, t0);
    starts.sort_unstable();
    assert_eq!(starts, vec![0, 0, 1_000, 1_000, 2_000, 2_000]);
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_limit_and_the_token_budget_hold_calls_back() {
    let slow = || {
        Arc::new(
            MockLlm::builder()
                .delay(Duration::from_secs(1))
                .record()
                .build()
                .unwrap(),
        )
    };
    let llm = slow();
    let mut c = plain();
    c.limits.max_concurrent = 2;
    let stack = Arc::new(resilient(llm.clone(), &c).unwrap());
    let t0 = Instant::now();
    burst(&stack, 4).await;
    assert_eq!(Instant::now() - t0, Duration::from_secs(2), "two at a time");

    // Each request is estimated at 4 + 512 tokens: two fit in 1,100 a minute,
    // the third waits for the refill of what it lacks.
    let llm = slow();
    let mut c = plain();
    c.limits.tokens_per_minute = 1_100;
    let stack = Arc::new(resilient(llm.clone(), &c).unwrap());
    let t0 = Instant::now();
    burst(&stack, 3).await;
    let mut starts = starts_ms(&llm, t0);
    starts.sort_unstable();
    assert_eq!(&starts[..2], &[0, 0]);
    // 1,100 - 2 × 516 = 68 left; 448 more at 1,100 a minute take 24.4 s.
    assert!((24_000..25_000).contains(&starts[2]), "{starts:?}");
}

#[tokio::test(start_paused = true)]
async fn fallback_switches_providers_when_the_first_is_open_or_refuses() {
    let primary = Arc::new(failing(MockError::http(503), 1_000));
    let secondary = Arc::new(MockLlm::builder().record().build().unwrap());
    let mut c = LlmCallConfig::default();
    c.breaker.failure_threshold = 2;
    let first = Arc::new(resilient(primary.clone(), &c).unwrap());
    let llm = FallbackLlm::from_first(
        first.clone(),
        [Arc::new(resilient(secondary.clone(), &c).unwrap()) as Arc<dyn LlmProvider>],
    );
    // Retryable failures go back to the caller (to retry) while the circuit is closed.
    for _ in 0..2 {
        assert!(matches!(
            llm.complete(request()).await,
            Err(LlmError::Server { .. })
        ));
    }
    assert_eq!(first.circuit(), CircuitState::Open);
    // Open: the next provider answers at once.
    assert!(llm.complete(request()).await.is_ok());
    assert_eq!((primary.calls().len(), secondary.calls().len()), (2, 1));

    // A permanent refusal (401) also moves on.
    let refusing = Arc::new(failing(MockError::http(401), 1_000));
    let secondary = Arc::new(MockLlm::builder().record().build().unwrap());
    let llm = FallbackLlm::from_first(
        Arc::new(resilient(refusing.clone(), &c).unwrap()),
        [Arc::new(resilient(secondary.clone(), &c).unwrap()) as Arc<dyn LlmProvider>],
    );
    assert!(llm.complete(request()).await.is_ok());
    assert_eq!((refusing.calls().len(), secondary.calls().len()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_trial_call_dropped_midway_frees_the_half_open_slot() {
    // Two failures open it; the trial hangs and is abandoned; the next call is let through.
    let llm = Arc::new(
        MockLlm::builder()
            .rule(Rule::any().error(MockError::http(500)).times(2))
            .rule(Rule::any().hang().times(1))
            .record()
            .build()
            .unwrap(),
    );
    let mut c = LlmCallConfig::default();
    c.breaker.failure_threshold = 2;
    c.breaker.reset_timeout = Duration::from_secs(5);
    let stack = Arc::new(resilient(llm.clone(), &c).unwrap());
    for _ in 0..2 {
        assert!(stack.complete(request()).await.is_err());
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    let trial = tokio::spawn({
        let stack = stack.clone();
        async move { stack.complete(request()).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(stack.circuit(), CircuitState::HalfOpen);
    trial.abort();
    assert!(trial.await.unwrap_err().is_cancelled());
    // The slot is free: this call is the new trial, reaches the provider and closes the circuit.
    assert!(stack.complete(request()).await.is_ok());
    assert_eq!(stack.circuit(), CircuitState::Closed);
    assert_eq!(
        llm.calls().len(),
        3,
        "the hanging call was never recorded as finished"
    );
}
