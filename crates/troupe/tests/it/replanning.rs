//! Re-planning: a subtask that fails for good makes the LLM evaluate the run
//! and re-plan, or give up with the reason; repeated failures count as a
//! stall.

use std::sync::Arc;

use serde_json::json;
use troupe_core::ledger::EventKind;
use troupe_core::llm::CallKind;
use troupe_core::task::{SubtaskStatus, TaskStatus};
use troupe_llm::mock::{MockError, MockLlm, Rule};

use crate::support::{config, count, troupe};

/// Every attempt at s2 (the analyst's subtask) gets a permanent error.
fn s2_always_refused() -> Rule {
    Rule::on(CallKind::Work)
        .subtask("s2")
        .error(MockError::http(400))
        .repeat()
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
