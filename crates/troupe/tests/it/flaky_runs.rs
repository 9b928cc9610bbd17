//! Whole runs over a flaky provider, with paused tokio time and the mock
//! LLM's faults: tasks complete when some calls fail, a thousand tasks all end
//! when half of them fail, and a role whose workers keep failing waits behind
//! its breaker.

use std::sync::Arc;
use std::time::Duration;

use troupe_core::ledger::EventKind;
use troupe_core::llm::CallKind;
use troupe_core::task::TaskStatus;
use troupe_llm::mock::{Fault, MockError, MockLlm, Rule};

use crate::support::{config, troupe};

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
