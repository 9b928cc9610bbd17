//! Failures the orchestrator must recover from, or end on with a clear reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use troupe::Troupe;
use troupe::worker::{Job, WorkError, WorkOutput, Worker, WorkerContext};
use troupe_core::bus::{Bus, BusError, DeadLetters, MemoryBus, QueueDepth, Subscription, topics};
use troupe_core::envelope::{Envelope, MessageKind};
use troupe_core::ledger::EventKind;
use troupe_core::llm::CallKind;
use troupe_core::task::{SubtaskStatus, TaskStatus};
use troupe_core::{AgentId, Role, SubtaskId};
use troupe_llm::mock::{MockError, MockLlm, Rule};

use crate::support::{config, count, kinds, reached, step, troupe};

/// Every attempt at s2 (the analyst's subtask) gets a permanent error.
fn s2_always_refused() -> Rule {
    Rule::on(CallKind::Work)
        .subtask("s2")
        .error(MockError::http(400))
        .repeat()
}

/// Fails its first `failures` attempts with a retryable error.
struct Flaky {
    failures: AtomicU32,
}

#[async_trait]
impl Worker for Flaky {
    async fn run(&self, job: &Job, ctx: &WorkerContext) -> Result<WorkOutput, WorkError> {
        ctx.progress(format!("attempt {}", job.attempt)).await;
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(WorkError::retryable("the upstream API returned 503"));
        }
        Ok(WorkOutput::text(format!("done on attempt {}", job.attempt)))
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_worker_is_retried() {
    let flaky = Flaky {
        failures: AtomicU32::new(2),
    };
    let troupe = Troupe::builder()
        .llm(Arc::new(MockLlm::builtin()))
        .config(config())
        .worker(Role::new("analyst").unwrap(), "analyses data", flaky)
        .build()
        .await
        .unwrap();
    let task = troupe.run("Analyse the churn").await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    let s2 = task
        .subtasks
        .iter()
        .find(|s| s.id.as_str() == "s2")
        .unwrap();
    assert_eq!(s2.attempts, 3);
    assert_eq!(s2.result.as_deref(), Some("done on attempt 3"));
    assert_eq!(
        s2.last_error.as_deref(),
        Some("the upstream API returned 503")
    );
    let entries = troupe.progress(task.id).await.unwrap();
    assert_eq!(
        count(&entries, EventKind::AttemptFailed),
        2,
        "{:#?}",
        kinds(&entries)
    );
    assert!(
        entries
            .iter()
            .any(|e| e.event == EventKind::SubtaskProgress && e.detail == "attempt 3")
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_llm_error_in_a_worker_fails_the_attempt_and_is_retried() {
    let llm = MockLlm::builder()
        .rule(
            Rule::on(CallKind::Work)
                .subtask("s1")
                .error(MockError::http(503))
                .times(2),
        )
        .build()
        .unwrap();
    let mut c = config();
    c.llm.max_attempts = 1;
    let troupe = troupe(Arc::new(llm), c).await;
    let task = troupe.run("Find facts").await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    assert_eq!(task.subtasks[0].attempts, 3);
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_plan_malformed_twice_then_valid_succeeds() {
    let llm = MockLlm::builder()
        .rule(Rule::on(CallKind::Plan).reply("Sure! I will research, analyse and write."))
        .rule(
            Rule::on(CallKind::Plan)
                .plan(json!({"subtasks": [{"id": "a", "role": "chef", "instruction": "cook"}]})),
        )
        .record()
        .build()
        .unwrap();
    let llm = Arc::new(llm);
    let troupe = troupe(llm.clone(), config()).await;
    let task = troupe.run("Plan a dinner").await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    let entries = troupe.progress(task.id).await.unwrap();
    let rejected: Vec<&str> = entries
        .iter()
        .filter(|e| e.event == EventKind::PlanRejected)
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(rejected.len(), 2);
    assert!(rejected[0].contains("no JSON object"), "{}", rejected[0]);
    assert!(rejected[1].contains("/subtasks/0/role"), "{}", rejected[1]);
    // The repair request showed the model its reply and what was wrong with it.
    let third = &llm.calls()[2];
    assert_eq!(third.meta().kind, CallKind::Plan);
    let last = third.request.last_user_message().unwrap();
    assert!(
        last.contains("/subtasks/0/role") && last.contains("corrected JSON"),
        "{last}"
    );
    // Only the latest rejected reply follows the question: the conversation
    // stays bounded (system, goal, last reply, its problems).
    let messages = &third.request.messages;
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert!(messages[2].content.contains("chef"), "{:?}", messages[2]);
    assert!(
        !messages
            .iter()
            .any(|m| m.content.contains("Sure! I will research"))
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_plan_that_never_validates_fails_with_the_reason() {
    let llm = MockLlm::builder()
        .rule(Rule::on(CallKind::Plan).reply("{\"subtasks\": [").repeat())
        .build()
        .unwrap();
    let troupe = troupe(Arc::new(llm), config()).await;
    let task = troupe.run("Anything").await.unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert!(task.subtasks.is_empty());
    let reason = task.error.unwrap();
    assert!(
        reason.contains("no valid plan after 3 replies") && reason.contains("cut off"),
        "{reason}"
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_llm_fails_planning_with_the_reason() {
    let llm = MockLlm::builder()
        .rule(
            Rule::on(CallKind::Plan)
                .error(MockError::http(401))
                .repeat(),
        )
        .build()
        .unwrap();
    let troupe = troupe(Arc::new(llm), config()).await;
    let task = troupe.run("Anything").await.unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert!(
        task.error
            .as_deref()
            .unwrap()
            .contains("refused the credentials"),
        "{:?}",
        task.error
    );
    troupe.shutdown().await;
}

/// A bus that delivers every result twice, as an at-least-once bus may.
struct Duplicating(MemoryBus);

#[async_trait]
impl Bus for Duplicating {
    fn name(&self) -> &str {
        "duplicating"
    }

    async fn publish(&self, topic: &str, envelope: Envelope) -> Result<(), BusError> {
        if envelope.kind == MessageKind::TaskResult {
            self.0.publish(topic, envelope.clone()).await?;
        }
        self.0.publish(topic, envelope).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &AgentId,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.0.subscribe(topic, group, consumer).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_result_changes_nothing() {
    let bus = MemoryBus::default();
    let troupe = Troupe::builder()
        .llm(Arc::new(MockLlm::builtin()))
        .bus(Arc::new(Duplicating(bus.clone())))
        .config(config())
        .build()
        .await
        .unwrap();
    let task = troupe.run("Count the stars").await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    let entries = troupe.progress(task.id).await.unwrap();
    assert_eq!(
        count(&entries, EventKind::SubtaskCompleted),
        3,
        "{:#?}",
        kinds(&entries)
    );
    assert!(task.subtasks.iter().all(|s| s.attempts == 1));

    // A result delivered again after the task ended changes nothing either.
    let stored = troupe.task(task.id).await.unwrap().unwrap();
    let worker = task.subtasks[0].agent.clone().unwrap();
    let again = Envelope::new(
        MessageKind::TaskResult,
        worker,
        troupe.agent_id().to_string(),
        &json!({"output": "other"}),
    )
    .unwrap()
    .about(task.id, &SubtaskId::new("s1").unwrap(), 1);
    let inbox = topics::inbox(troupe.agent_id());
    bus.publish(&inbox, again).await.unwrap();
    troupe_testkit::eventually(
        "the late result is taken off the inbox",
        Duration::from_secs(5),
        || async { (bus.depth(&inbox).await.unwrap() == 0).then_some(()) },
    )
    .await;
    assert_eq!(troupe.task(task.id).await.unwrap().unwrap(), stored);
    assert_eq!(troupe.progress(task.id).await.unwrap(), entries);
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_subtask_that_hangs_times_out_and_is_retried() {
    let llm = MockLlm::builder()
        .rule(Rule::on(CallKind::Work).subtask("s2").hang())
        .build()
        .unwrap();
    let mut c = config();
    c.orchestrator.subtask_timeout = Some(Duration::from_millis(300));
    let troupe = troupe(Arc::new(llm), c).await;
    let task = troupe.run("Slow research").await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    let s2 = task
        .subtasks
        .iter()
        .find(|s| s.id.as_str() == "s2")
        .unwrap();
    assert_eq!(s2.attempts, 2);
    let entries = troupe.progress(task.id).await.unwrap();
    // Cut by the 300 ms timeout: the orchestrator's deadline or the worker's
    // own, whichever reports first.
    let failed = step(&entries, EventKind::AttemptFailed, "s2");
    assert!(
        failed.detail.contains("no result within 300ms")
            || failed.detail.contains("the worker took longer than 300ms"),
        "{}",
        failed.detail
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_subtask_that_fails_for_good_triggers_a_replan() {
    // The analyst's model rejects every request: a permanent error.
    let llm = MockLlm::builder()
        .rule(s2_always_refused())
        .record()
        .build()
        .unwrap();
    let llm = Arc::new(llm);
    let troupe = troupe(llm.clone(), config()).await;
    let task = troupe.run("Estimate the market").await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    assert_eq!(task.plan_revision, 1);
    let status = |id: &str| {
        task.subtasks
            .iter()
            .find(|s| s.id.as_str() == id)
            .unwrap()
            .status
    };
    assert_eq!(status("s1"), SubtaskStatus::Completed);
    assert_eq!(status("s2"), SubtaskStatus::Failed);
    assert_eq!(status("s3"), SubtaskStatus::Superseded);
    assert_eq!(status("r1s3"), SubtaskStatus::Completed);
    assert!(
        task.facts.iter().any(|f| f.contains("s2 (analyst) failed")),
        "{:?}",
        task.facts
    );
    let entries = troupe.progress(task.id).await.unwrap();
    assert_eq!(count(&entries, EventKind::Replanning), 1);
    assert_eq!(count(&entries, EventKind::PlanAccepted), 2);
    // Before re-planning, the LLM judged the run, and said to re-plan.
    let evaluated = entries
        .iter()
        .find(|e| e.event == EventKind::ProgressEvaluated)
        .unwrap();
    assert!(
        evaluated.detail.starts_with("decision: replan"),
        "{}",
        evaluated.detail
    );
    let evaluation = llm
        .calls()
        .into_iter()
        .find(|c| c.meta().kind == CallKind::Evaluate)
        .unwrap();
    assert!(
        evaluation
            .request
            .last_user_message()
            .unwrap()
            .contains("s2 (analyst)"),
        "the evaluation sees what failed"
    );
    // The re-plan request told the model what failed and what is already done.
    let replan = llm
        .calls()
        .into_iter()
        .find(|c| c.meta().kind == CallKind::Replan)
        .unwrap();
    let message = replan.request.last_user_message().unwrap();
    assert!(
        message.contains("s2 (analyst)") && message.contains("s1 (researcher)"),
        "{message}"
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn when_replanning_does_not_help_the_task_fails_with_the_reason() {
    let llm = MockLlm::builder()
        .rule(
            Rule::on(CallKind::Work)
                .role("analyst")
                .error(MockError::http(400))
                .repeat(),
        )
        .build()
        .unwrap();
    let troupe = troupe(Arc::new(llm), config()).await;
    let task = troupe.run("Estimate the market").await.unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    let reason = task.error.unwrap();
    assert!(
        reason.contains("r1s2 (analyst) failed") && reason.contains("after 1 re-plans"),
        "{reason}"
    );
    assert!(
        task.subtasks.iter().all(|s| s.status.is_terminal()),
        "{:?}",
        task.subtasks
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_evaluation_that_gives_up_ends_the_task_without_a_replan() {
    let llm = MockLlm::builder()
        .rule(s2_always_refused())
        // The first evaluation is malformed; its repair gives up.
        .rule(Rule::on(CallKind::Evaluate).reply("I think we should stop."))
        .rule(Rule::on(CallKind::Evaluate).plan(json!({
            "progress_being_made": false, "in_loop": true, "decision": "give_up",
            "reason": "the analyst's model refuses every request"
        })))
        .record()
        .build()
        .unwrap();
    let llm = Arc::new(llm);
    let troupe = troupe(llm.clone(), config()).await;
    let task = troupe.run("Estimate the market").await.unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    let reason = task.error.unwrap();
    assert!(
        reason.contains("s2 (analyst) failed")
            && reason.contains("gave up: the analyst's model refuses every request"),
        "{reason}"
    );
    assert_eq!(task.plan_revision, 0);
    let entries = troupe.progress(task.id).await.unwrap();
    assert_eq!(count(&entries, EventKind::EvaluationRejected), 1);
    assert_eq!(count(&entries, EventKind::Replanning), 0);
    assert!(
        llm.calls()
            .iter()
            .all(|c| c.meta().kind != CallKind::Replan)
    );
    // The repair request listed the problems of the malformed evaluation.
    let repair = llm
        .calls()
        .into_iter()
        .filter(|c| c.meta().kind == CallKind::Evaluate)
        .nth(1)
        .unwrap();
    assert!(
        repair
            .request
            .last_user_message()
            .unwrap()
            .contains("could not be used"),
        "{:?}",
        repair.request.last_user_message()
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_evaluation_that_never_validates_does_not_stop_the_replan() {
    let llm = MockLlm::builder()
        .rule(s2_always_refused())
        .rule(
            Rule::on(CallKind::Evaluate)
                .reply(r#"{"decision": "maybe"}"#)
                .repeat(),
        )
        .build()
        .unwrap();
    let troupe = troupe(Arc::new(llm), config()).await;
    let task = troupe.run("Estimate the market").await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    assert_eq!(task.plan_revision, 1);
    let entries = troupe.progress(task.id).await.unwrap();
    assert_eq!(count(&entries, EventKind::EvaluationRejected), 3);
    let evaluated = entries
        .iter()
        .find(|e| e.event == EventKind::ProgressEvaluated)
        .unwrap();
    assert!(
        evaluated
            .detail
            .contains("no valid progress evaluation after 3 replies")
            && evaluated.detail.ends_with("re-planning without it"),
        "{}",
        evaluated.detail
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn repeated_failures_count_as_a_stall() {
    let llm = MockLlm::builder()
        .rule(
            Rule::on(CallKind::Work)
                .subtask("s1")
                .error(MockError::http(503))
                .repeat(),
        )
        .rule(
            Rule::on(CallKind::Work)
                .subtask("s2")
                .error(MockError::http(503))
                .repeat(),
        )
        .build()
        .unwrap();
    let mut c = config();
    c.llm.max_attempts = 1;
    c.orchestrator.max_attempts = 10;
    c.orchestrator.max_stalls = 4;
    // The subject is the stall counter: a breaker opening at the same 5
    // failures would fail the re-plan's call first (tests/it/resilience.rs covers it).
    c.llm.breaker.failure_threshold = 100;
    let troupe = troupe(Arc::new(llm), c).await;
    let task = troupe.run("Anything").await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    let entries = troupe.progress(task.id).await.unwrap();
    let stalled = entries
        .iter()
        .find(|e| e.event == EventKind::Stalled)
        .unwrap();
    assert!(
        stalled.detail.starts_with("5 failures in a row"),
        "{}",
        stalled.detail
    );
    assert_eq!(task.plan_revision, 1);
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_task_ends_cancelled() {
    let llm = MockLlm::builder()
        .rule(Rule::on(CallKind::Work).hang().repeat())
        .build()
        .unwrap();
    let troupe = troupe(Arc::new(llm), config()).await;
    let handle = troupe.submit("Wait forever").await.unwrap();
    let mut events = handle.events();
    reached(&mut events, EventKind::SubtaskStarted, None).await;
    assert!(troupe.cancel(handle.id()));
    let task = handle.wait().await.unwrap();
    assert_eq!(task.status, TaskStatus::Cancelled);
    assert!(
        task.subtasks
            .iter()
            .all(|s| s.status == SubtaskStatus::Cancelled),
        "{:?}",
        task.subtasks
    );
    assert_eq!(
        troupe.task(task.id).await.unwrap().unwrap().status,
        TaskStatus::Cancelled
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_past_its_time_limit_fails() {
    let llm = MockLlm::builder()
        .rule(Rule::on(CallKind::Work).hang().repeat())
        .build()
        .unwrap();
    let mut c = config();
    c.orchestrator.task_timeout = Duration::from_millis(500);
    let troupe = troupe(Arc::new(llm), c).await;
    let task = troupe.run("Never ends").await.unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(
        task.error.as_deref(),
        Some("the task did not finish within 500ms")
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn forged_and_malformed_messages_are_set_aside() {
    let bus = MemoryBus::default();
    let llm = MockLlm::builder()
        .rule(
            Rule::on(CallKind::Work)
                .delay(Duration::from_millis(300))
                .repeat(),
        )
        .build()
        .unwrap();
    let troupe = Troupe::builder()
        .llm(Arc::new(llm))
        .bus(Arc::new(bus.clone()))
        .config(config())
        .build()
        .await
        .unwrap();
    let handle = troupe.submit("Keep going").await.unwrap();
    reached(&mut handle.events(), EventKind::SubtaskStarted, None).await;

    let forger = AgentId::new("mallory").unwrap();
    let inbox = topics::inbox(troupe.agent_id());
    let garbage = Envelope::new(
        MessageKind::TaskResult,
        forger.clone(),
        "x",
        &json!({"not": "a result"}),
    )
    .unwrap()
    .about(handle.id(), &SubtaskId::new("s1").unwrap(), 1);
    bus.publish(&inbox, garbage).await.unwrap();
    let unknown = Envelope::new(
        MessageKind::TaskResult,
        forger.clone(),
        "x",
        &json!({"output": "forged"}),
    )
    .unwrap()
    .about(handle.id(), &SubtaskId::new("nope").unwrap(), 1);
    bus.publish(&inbox, unknown).await.unwrap();
    let assignment =
        Envelope::new(MessageKind::TaskAssign, forger, "x", &json!({"goal": 1})).unwrap();
    bus.publish(&topics::role(&Role::new("writer").unwrap()), assignment)
        .await
        .unwrap();

    let task = handle.wait().await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    assert!(
        task.subtasks
            .iter()
            .all(|s| s.result.as_deref() != Some("forged"))
    );
    let dead = bus.list(&inbox).await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:#?}");
    assert!(
        dead[0].reason.contains("malformed task_result"),
        "{}",
        dead[0].reason
    );
    assert!(
        dead[1].reason.contains("no subtask nope"),
        "{}",
        dead[1].reason
    );
    let dead = bus
        .list(&topics::role(&Role::new("writer").unwrap()))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_workers_and_shutdown_now_does_not() {
    let make = || async {
        let llm = MockLlm::builder()
            .rule(Rule::on(CallKind::Work).hang().repeat())
            .build()
            .unwrap();
        let mut c = config();
        c.workers.shutdown_grace = Duration::from_millis(800);
        let troupe = troupe(Arc::new(llm), c).await;
        let handle = troupe.submit("Hangs").await.unwrap();
        reached(&mut handle.events(), EventKind::SubtaskStarted, None).await;
        handle.cancel();
        assert_eq!(handle.wait().await.unwrap().status, TaskStatus::Cancelled);
        troupe
    };
    let started = tokio::time::Instant::now();
    make().await.shutdown().await;
    let graceful = started.elapsed();
    let started = tokio::time::Instant::now();
    make().await.shutdown_now().await;
    let now = started.elapsed();
    assert!(
        graceful >= Duration::from_millis(800),
        "shutdown took {graceful:?}: shorter than the workers' grace"
    );
    assert!(
        now < Duration::from_millis(600),
        "shutdown_now took {now:?}"
    );
}
