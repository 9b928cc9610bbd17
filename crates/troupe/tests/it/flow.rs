//! A goal's way from plan to answer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use troupe_core::ledger::{EventKind, usage_by_agent};
use troupe_core::llm::CallKind;
use troupe_core::task::{SubtaskStatus, TaskStatus, Usage};
use troupe_llm::mock::{MockLlm, Rule};

use crate::support::{config, count, kinds, result_of, step, troupe};

#[tokio::test(start_paused = true)]
async fn a_goal_is_planned_dispatched_and_answered() {
    let llm = Arc::new(
        MockLlm::builder()
            .delay(Duration::from_millis(150))
            .record()
            .build()
            .unwrap(),
    );
    let troupe = troupe(llm.clone(), config()).await;
    let task = troupe
        .run("Write a sales report from sales.csv")
        .await
        .unwrap();

    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    let ids: Vec<&str> = task.subtasks.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["s1", "s2", "s3"]);
    for s in &task.subtasks {
        assert_eq!(s.status, SubtaskStatus::Completed);
        assert_eq!(s.attempts, 1);
        // Each subtask reached a worker of its own role.
        let agent = s.agent.as_ref().unwrap().as_str();
        assert!(
            agent.starts_with(&format!("{}-", s.role)),
            "{} done by {agent}",
            s.role
        );
    }

    // The writer got the results it depends on.
    let calls = llm.calls();
    let writer_call = calls
        .iter()
        .find(|c| {
            c.meta()
                .subtask_id
                .as_ref()
                .is_some_and(|s| s.as_str() == "s3")
        })
        .unwrap();
    let prompt = writer_call.request.last_user_message().unwrap();
    assert!(
        prompt.contains(result_of(&task, "s1")) && prompt.contains(result_of(&task, "s2")),
        "{prompt}"
    );

    // The answer is made from every result.
    let answer = task.result.as_deref().unwrap();
    for id in ["s1", "s2", "s3"] {
        assert!(
            answer.contains(result_of(&task, id)),
            "answer lacks {id}: {answer}"
        );
    }
    assert!(task.usage.prompt_tokens > 0 && task.usage.completion_tokens > 0);
    assert_eq!(llm.call_count(), 5, "plan + 3 subtasks + synthesis");

    // The progress ledger shows every step, gap-free, in a sensible order.
    let entries = troupe.progress(task.id).await.unwrap();
    let steps: Vec<u64> = entries.iter().map(|e| e.step).collect();
    assert_eq!(steps, (1..=entries.len() as u64).collect::<Vec<_>>());
    let events = kinds(&entries);
    assert_eq!(
        events[..3].iter().map(|e| e.0).collect::<Vec<_>>(),
        [
            EventKind::TaskSubmitted,
            EventKind::PlanningStarted,
            EventKind::PlanAccepted
        ]
    );
    assert_eq!(
        events[events.len() - 2..]
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        [EventKind::SynthesisStarted, EventKind::TaskCompleted]
    );
    for kind in [
        EventKind::SubtaskDispatched,
        EventKind::SubtaskStarted,
        EventKind::SubtaskCompleted,
    ] {
        assert_eq!(count(&entries, kind), 3, "{kind}: {events:#?}");
    }
    // Worker steps are recorded under the worker that took them.
    let started = step(&entries, EventKind::SubtaskStarted, "s1");
    assert_eq!(Some(&started.agent), task.subtasks[0].agent.as_ref());

    // Tokens are counted per agent, and the agents' shares add up to the task's.
    let by_agent = usage_by_agent(&entries);
    let orchestrator = &entries[0].agent;
    assert!(by_agent[orchestrator].total() > 0, "planning and synthesis");
    for s in &task.subtasks {
        assert!(
            by_agent[s.agent.as_ref().unwrap()].completion_tokens > 0,
            "{}",
            s.id
        );
    }
    let mut sum = Usage::default();
    for u in by_agent.values() {
        sum += *u;
    }
    assert_eq!(sum, task.usage);

    // The store holds the same ledger the run returned.
    assert_eq!(troupe.task(task.id).await.unwrap().unwrap(), task);
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn dependents_wait_and_independent_subtasks_overlap() {
    let llm = Arc::new(
        MockLlm::builder()
            .delay(Duration::from_millis(300))
            .record()
            .build()
            .unwrap(),
    );
    let troupe = troupe(llm.clone(), config()).await;
    let task = troupe.run("Compare three databases").await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    let entries = troupe.progress(task.id).await.unwrap();

    // s3 depends on s1 and s2: it is dispatched only after both completed.
    let s3_dispatched = step(&entries, EventKind::SubtaskDispatched, "s3");
    for dep in ["s1", "s2"] {
        let done = step(&entries, EventKind::SubtaskCompleted, dep);
        assert!(
            done.step < s3_dispatched.step && done.at <= s3_dispatched.at,
            "s3 before {dep} finished"
        );
    }
    // s1 and s2 ran at the same time: each started before the other finished.
    let calls = llm.calls();
    let span = |id: &str| {
        let c = calls
            .iter()
            .find(|c| {
                c.meta()
                    .subtask_id
                    .as_ref()
                    .is_some_and(|s| s.as_str() == id)
            })
            .unwrap();
        (c.started, c.finished)
    };
    let (a0, a1) = span("s1");
    let (b0, b1) = span("s2");
    assert!(a0 < b1 && b0 < a1, "s1 and s2 did not overlap");
    let (c0, _) = span("s3");
    assert!(
        c0 >= a1 && c0 >= b1,
        "s3's LLM call began before a dependency finished"
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn several_workers_share_a_role() {
    let plan = json!({"subtasks": [
        {"id": "r1", "role": "researcher", "instruction": "look up A"},
        {"id": "r2", "role": "researcher", "instruction": "look up B"},
        {"id": "r3", "role": "researcher", "instruction": "look up C"},
        {"id": "r4", "role": "researcher", "instruction": "look up D"},
        {"id": "w", "role": "writer", "instruction": "summarise", "depends_on": ["r1", "r2", "r3", "r4"]}
    ]});
    let llm = Arc::new(
        MockLlm::builder()
            .rule(Rule::on(CallKind::Plan).plan(plan))
            .rule(
                Rule::on(CallKind::Work)
                    .role("researcher")
                    .delay(Duration::from_millis(200))
                    .repeat(),
            )
            .build()
            .unwrap(),
    );
    let mut c = config();
    c.workers.per_role = 2;
    c.workers.concurrency = 1;
    let troupe = troupe(llm, c).await;
    let task = troupe.run("Survey four topics").await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    let researchers: HashSet<&str> = task
        .subtasks
        .iter()
        .filter(|s| s.role.as_str() == "researcher")
        .map(|s| s.agent.as_ref().unwrap().as_str())
        .collect();
    assert_eq!(
        researchers.len(),
        2,
        "one worker did everything: {researchers:?}"
    );
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn many_tasks_run_at_once() {
    let llm = Arc::new(
        MockLlm::builder()
            .delay(Duration::from_millis(20))
            .build()
            .unwrap(),
    );
    let troupe = troupe(llm, config()).await;
    let mut handles = Vec::new();
    for i in 0..50 {
        handles.push(troupe.submit(format!("goal number {i}")).await.unwrap());
    }
    for h in handles {
        let task = h.wait().await.unwrap();
        assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    }
    assert_eq!(troupe.running(), 0);
    troupe.shutdown().await;
}

#[tokio::test]
async fn empty_and_oversized_goals_are_refused() {
    let llm = Arc::new(MockLlm::builtin());
    let mut c = config();
    c.orchestrator.max_goal_chars = 10;
    let troupe = troupe(llm, c).await;
    let empty = troupe.submit("   ").await.unwrap_err();
    assert!(empty.to_string().contains("empty"), "{empty}");
    let long = troupe.submit("x".repeat(11)).await.unwrap_err();
    assert!(long.to_string().contains("at most 10"), "{long}");
    troupe.shutdown().await;
}

#[tokio::test]
async fn a_runtime_needs_an_llm_and_valid_settings() {
    let err = troupe::Troupe::builder().build().await.unwrap_err();
    assert!(err.to_string().contains("no LLM provider"), "{err}");
    let mut c = config();
    c.workers.per_role = 0;
    let err = troupe::Troupe::builder()
        .llm(Arc::new(MockLlm::builtin()))
        .config(c)
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("workers.per_role"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn partial_results_are_visible_while_the_task_runs() {
    let llm = MockLlm::builder()
        .rule(
            Rule::on(CallKind::Work)
                .subtask("s3")
                .delay(Duration::from_millis(800)),
        )
        .build()
        .unwrap();
    let troupe = troupe(Arc::new(llm), config()).await;
    let handle = troupe.submit("Slow writer").await.unwrap();
    let mut events = handle.events();
    let mut seen = None;
    for _ in 0..2 {
        crate::support::reached(&mut events, EventKind::SubtaskCompleted, None).await;
        let now = troupe.task(handle.id()).await.unwrap().unwrap();
        let done: Vec<&str> = now
            .subtasks
            .iter()
            .filter(|s| s.status == SubtaskStatus::Completed)
            .map(|s| s.id.as_str())
            .collect();
        if done == ["s1", "s2"] {
            seen = Some(now);
            break;
        }
    }
    let partial = seen.expect("s1 and s2 never showed as completed while s3 ran");
    assert_eq!(partial.status, TaskStatus::Running);
    assert!(partial.subtasks[0].result.is_some() && partial.result.is_none());
    assert!(
        partial.subtasks[2].status.is_in_flight(),
        "{:?}",
        partial.subtasks[2].status
    );
    let summary = troupe
        .stores()
        .tasks
        .list_tasks(&Default::default())
        .await
        .unwrap();
    assert_eq!(
        (summary[0].subtasks_completed, summary[0].subtasks_total),
        (2, 3)
    );
    assert_eq!(handle.wait().await.unwrap().status, TaskStatus::Completed);
    troupe.shutdown().await;
}
