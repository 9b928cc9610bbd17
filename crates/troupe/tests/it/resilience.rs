//! The resilience layers with paused tokio time and the mock LLM's errors:
//! retry delays and limits, `Retry-After`, the circuit breaker's states, the
//! call timeout, the rate, token and concurrency limits, fallback, and whole
//! runs over a flaky provider.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use troupe::config::{BackoffConfig, LlmCallConfig};
use troupe::resilience::{CircuitState, FallbackLlm, RetryPolicy, resilient};
use troupe_core::ledger::EventKind;
use troupe_core::llm::{CallKind, ChatMessage, ChatRequest, LlmError, LlmProvider};
use troupe_core::store::StoreError;
use troupe_core::task::TaskStatus;
use troupe_llm::mock::{Fault, MockError, MockLlm, Rule};

use crate::support::{config, troupe};

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
async fn tasks_complete_when_30_percent_of_llm_calls_fail_transiently() {
    let mut builder = MockLlm::builder().seed(7);
    for kind in [CallKind::Plan, CallKind::Work, CallKind::Synthesize] {
        builder = builder.fault(Fault::on(kind, 0.3, MockError::http(503)));
    }
    let llm = Arc::new(builder.record().build().unwrap());
    let mut c = config();
    // 0.3^5: the breaker may open now and then; it must not stall the run for long.
    c.llm.breaker.reset_timeout = Duration::from_millis(200);
    let troupe = troupe(llm.clone(), c).await;
    let handles: Vec<_> =
        futures::future::join_all((0..40).map(|n| troupe.submit(format!("Goal {n}"))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    for handle in handles {
        let task = handle.wait().await.unwrap();
        assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    }
    let failed = llm.calls().iter().filter(|c| c.outcome.is_err()).count();
    let all = llm.calls().len();
    assert!(
        failed * 100 >= all * 20,
        "the faults fired: {failed} of {all}"
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
#[allow(clippy::print_stderr)] // the figures, for the record
async fn a_thousand_tasks_on_a_provider_failing_half_the_time_all_end_and_the_process_answers() {
    let mut builder = MockLlm::builder().seed(11);
    for kind in [
        CallKind::Plan,
        CallKind::Work,
        CallKind::Synthesize,
        CallKind::Evaluate,
        CallKind::Replan,
    ] {
        builder = builder.fault(Fault::on(kind, 0.5, MockError::http(503)));
    }
    let llm = Arc::new(builder.build().unwrap());
    let mut c = config();
    c.llm.breaker.reset_timeout = Duration::from_millis(50);
    c.orchestrator.role_breaker.reset_timeout = Duration::from_millis(50);
    let troupe = troupe(llm, c).await;

    let handles: Vec<_> =
        futures::future::join_all((0..1_000).map(|n| troupe.submit(format!("Goal {n}"))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let ended = tokio::time::timeout(
        Duration::from_secs(300),
        futures::future::join_all(handles.into_iter().map(|h| h.wait())),
    )
    .await
    .expect("every task ends: none hangs");
    let mut completed = 0;
    for task in ended {
        let task = task.unwrap();
        match task.status {
            TaskStatus::Completed => completed += 1,
            TaskStatus::Failed => assert!(task.error.is_some_and(|e| !e.is_empty())),
            other => panic!("task {} ended {other}", task.id),
        }
    }
    eprintln!("1,000 tasks, half the LLM calls failing: {completed} completed");
    assert!(completed >= 900, "{completed} of 1,000 completed");
    // The process still answers: a read of the store.
    assert!(troupe.running() == 0);
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_role_whose_workers_keep_failing_waits_behind_its_breaker() {
    // The researcher's LLM calls fail 3 times, then answer.
    let llm = Arc::new(
        MockLlm::builder()
            .rule(
                Rule::on(CallKind::Work)
                    .role("researcher")
                    .error(MockError::http(503))
                    .times(3),
            )
            .record()
            .build()
            .unwrap(),
    );
    let mut c = config();
    c.llm.max_attempts = 1;
    c.llm.breaker.enabled = false;
    c.orchestrator.max_attempts = 10;
    c.orchestrator.max_stalls = 100;
    c.orchestrator.role_breaker.failure_threshold = 2;
    c.orchestrator.role_breaker.reset_timeout = Duration::from_secs(1);
    let troupe = troupe(llm.clone(), c).await;
    let task = troupe.run("Anything").await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    let entries = troupe.progress(task.id).await.unwrap();
    let dispatched = entries
        .iter()
        .filter(|e| {
            e.event == EventKind::SubtaskDispatched
                && e.subtask_id.as_ref().is_some_and(|s| s.as_str() == "s1")
        })
        .count();
    assert_eq!(dispatched, 4, "3 failures and the success");
    // The researcher's calls, in (paused) tokio time: attempts 1 and 2 fail
    // the retry backoff apart (10–50 ms); the second failure opens the role's
    // circuit, so attempt 3 (the trial) waits the reset time; it fails, the
    // circuit opens again, and attempt 4 waits a full reset too.
    let calls: Vec<_> = llm
        .calls()
        .into_iter()
        .filter(|c| {
            c.meta()
                .role
                .as_ref()
                .is_some_and(|r| r.as_str() == "researcher")
        })
        .collect();
    assert_eq!(calls.len(), 4);
    let gap = |i: usize| calls[i].started - calls[i - 1].finished;
    assert!(
        gap(1) < Duration::from_millis(100),
        "no wait before the circuit opened: {:?}",
        gap(1)
    );
    assert!(
        gap(2) >= Duration::from_secs(1),
        "the trial waited for the reset: {:?}",
        gap(2)
    );
    assert!(
        gap(3) >= Duration::from_secs(1),
        "open again after the failed trial: {:?}",
        gap(3)
    );
    troupe.shutdown().await;
}

/// A store that fails (as unavailable) every `every`-th operation, or all of them after `dies_after`.
struct FlakyStore {
    tasks: Arc<dyn troupe_core::store::TaskStore>,
    progress: Arc<dyn troupe_core::store::ProgressStore>,
    leases: Arc<dyn troupe_core::store::LeaseStore>,
    checkpoints: Arc<dyn troupe_core::store::CheckpointStore>,
    calls: std::sync::atomic::AtomicU32,
    every: u32,
    dies_after: u32,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n > self.dies_after || n.is_multiple_of(self.every) {
            Err(StoreError::Unavailable(format!(
                "call {n}: connection refused"
            )))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl troupe_core::store::TaskStore for FlakyStore {
    async fn create_task(&self, task: &troupe_core::task::TaskRecord) -> Result<(), StoreError> {
        self.check()?;
        self.tasks.create_task(task).await
    }
    async fn get_task(
        &self,
        id: troupe_core::TaskId,
    ) -> Result<Option<troupe_core::task::TaskRecord>, StoreError> {
        self.check()?;
        self.tasks.get_task(id).await
    }
    async fn list_tasks(
        &self,
        q: &troupe_core::store::TaskQuery,
    ) -> Result<Vec<troupe_core::task::TaskSummary>, StoreError> {
        self.check()?;
        self.tasks.list_tasks(q).await
    }
    async fn update_task(
        &self,
        id: troupe_core::TaskId,
        u: &troupe_core::store::TaskUpdate,
    ) -> Result<troupe_core::ledger::Applied, StoreError> {
        self.check()?;
        self.tasks.update_task(id, u).await
    }
    async fn save_plan(
        &self,
        id: troupe_core::TaskId,
        revision: u32,
        facts: &[String],
        subtasks: &[troupe_core::task::SubtaskRecord],
    ) -> Result<(), StoreError> {
        self.check()?;
        self.tasks.save_plan(id, revision, facts, subtasks).await
    }
    async fn update_subtask(
        &self,
        id: troupe_core::TaskId,
        s: &troupe_core::SubtaskId,
        c: &troupe_core::ledger::SubtaskChange,
        fence: Option<u64>,
    ) -> Result<troupe_core::ledger::Applied, StoreError> {
        self.check()?;
        self.tasks.update_subtask(id, s, c, fence).await
    }
}

#[async_trait::async_trait]
impl troupe_core::store::ProgressStore for FlakyStore {
    async fn append(
        &self,
        e: troupe_core::ledger::NewProgressEntry,
    ) -> Result<troupe_core::ledger::ProgressEntry, StoreError> {
        self.check()?;
        self.progress.append(e).await
    }
    async fn entries(
        &self,
        task: troupe_core::TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<troupe_core::ledger::ProgressEntry>, StoreError> {
        self.check()?;
        self.progress.entries(task, after, limit).await
    }
}

#[async_trait::async_trait]
impl troupe_core::store::LeaseStore for FlakyStore {
    async fn acquire(
        &self,
        task: troupe_core::TaskId,
        owner: &troupe_core::AgentId,
        ttl: Duration,
    ) -> Result<Option<troupe_core::store::Lease>, StoreError> {
        self.check()?;
        self.leases.acquire(task, owner, ttl).await
    }
    async fn renew(
        &self,
        owner: &troupe_core::AgentId,
        held: &[(troupe_core::TaskId, u64)],
        ttl: Duration,
    ) -> Result<Vec<troupe_core::TaskId>, StoreError> {
        self.check()?;
        self.leases.renew(owner, held, ttl).await
    }
    async fn release(
        &self,
        task: troupe_core::TaskId,
        owner: &troupe_core::AgentId,
        epoch: u64,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.leases.release(task, owner, epoch).await
    }
    async fn orphaned(
        &self,
        grace: Duration,
        limit: usize,
    ) -> Result<Vec<troupe_core::TaskId>, StoreError> {
        self.check()?;
        self.leases.orphaned(grace, limit).await
    }
}

#[async_trait::async_trait]
impl troupe_core::store::CheckpointStore for FlakyStore {
    async fn save_checkpoint(
        &self,
        checkpoint: &troupe_core::store::Checkpoint,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.checkpoints.save_checkpoint(checkpoint).await
    }
    async fn latest_checkpoint(
        &self,
        task: troupe_core::TaskId,
    ) -> Result<Option<troupe_core::store::Checkpoint>, StoreError> {
        self.check()?;
        self.checkpoints.latest_checkpoint(task).await
    }
    async fn prune_checkpoints(&self) -> Result<u64, StoreError> {
        self.check()?;
        self.checkpoints.prune_checkpoints().await
    }
}

fn flaky_store(every: u32, dies_after: u32) -> Arc<FlakyStore> {
    let inner = troupe_core::store::Stores::memory();
    Arc::new(FlakyStore {
        tasks: inner.tasks,
        progress: inner.progress,
        leases: inner.leases,
        checkpoints: inner.checkpoints,
        calls: std::sync::atomic::AtomicU32::new(0),
        every,
        dies_after,
    })
}

#[tokio::test(start_paused = true)]
async fn store_and_bus_operations_that_fail_for_a_moment_are_retried() {
    let store = flaky_store(3, u32::MAX);
    let bus = Arc::new(FlakyBus {
        inner: troupe_core::bus::MemoryBus::default(),
        calls: std::sync::atomic::AtomicU32::new(0),
    });
    let troupe = troupe::Troupe::builder()
        .llm(Arc::new(MockLlm::builtin()))
        .stores(troupe_core::store::Stores::from_backend(store.clone()))
        .bus(bus.clone())
        .config(config())
        .build()
        .await
        .unwrap();
    for n in 0..5 {
        let task = troupe.run(format!("Goal {n}")).await.unwrap();
        assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    }
    // Every failed publish was retried by the bus policy, none reached the
    // subtask level as a failed attempt.
    let tasks = troupe
        .stores()
        .tasks
        .list_tasks(&troupe_core::store::TaskQuery::default())
        .await
        .unwrap();
    for t in &tasks {
        let entries = troupe.progress(t.id).await.unwrap();
        assert_eq!(
            entries
                .iter()
                .filter(|e| e.event == EventKind::AttemptFailed)
                .count(),
            0,
            "{:?}",
            entries.iter().map(|e| &e.detail).collect::<Vec<_>>()
        );
    }
    let store_calls = store.calls.load(std::sync::atomic::Ordering::SeqCst);
    let bus_calls = bus.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        store_calls >= 60 && bus_calls >= 30,
        "{store_calls} store calls, {bus_calls} publishes: a third and a half failed"
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_store_that_dies_fails_the_task_with_the_reason_instead_of_hanging() {
    let store = flaky_store(u32::MAX, 8);
    let troupe = troupe::Troupe::builder()
        .llm(Arc::new(MockLlm::builtin()))
        .stores(troupe_core::store::Stores::from_backend(store))
        .config(config())
        .build()
        .await
        .unwrap();
    let handle = troupe.submit("Anything").await.unwrap();
    let task = tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .expect("the task ends")
        .unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    let reason = task.error.unwrap();
    assert!(
        reason.contains("the store failed") && reason.contains("connection refused"),
        "{reason}"
    );
    // Now dead: a new task is refused at once with the store's error, after the retries.
    let refused = troupe.submit("Another").await.unwrap_err();
    assert!(refused.to_string().contains("unavailable"), "{refused}");
    troupe.shutdown().await;
}

/// A bus whose every second publish fails as unavailable.
struct FlakyBus {
    inner: troupe_core::bus::MemoryBus,
    calls: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl troupe_core::bus::Bus for FlakyBus {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn publish(
        &self,
        topic: &str,
        envelope: troupe_core::envelope::Envelope,
    ) -> Result<(), troupe_core::bus::BusError> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n.is_multiple_of(2) {
            return Err(troupe_core::bus::BusError::Unavailable(
                "broker restarting".into(),
            ));
        }
        self.inner.publish(topic, envelope).await
    }
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &troupe_core::AgentId,
    ) -> Result<Box<dyn troupe_core::bus::Subscription>, troupe_core::bus::BusError> {
        self.inner.subscribe(topic, group, consumer).await
    }
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
