//! Failures the orchestrator must recover from, or end on with a clear reason:
//! failed and hung attempts retried, plans that do not validate, an
//! unreachable LLM, cancellation and the task's time limit. Re-planning and
//! stalls are in `replanning`; duplicate and forged messages and shutdown in
//! `messages`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use troupe::Troupe;
use troupe::worker::{Job, WorkError, WorkOutput, Worker, WorkerContext};
use troupe_core::Role;
use troupe_core::ledger::EventKind;
use troupe_core::llm::CallKind;
use troupe_core::task::{SubtaskStatus, TaskStatus};
use troupe_llm::mock::{MockError, MockLlm, Rule};

use crate::support::{config, count, kinds, reached, step, troupe};

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
