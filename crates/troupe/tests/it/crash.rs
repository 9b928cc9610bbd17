//! Coordinators that crash at exact points (named failure points, the
//! `failpoints` feature): another coordinator takes each task over once the
//! crashed one's lease lapses, and finishes it with nothing lost or done twice.
//!
//! Leases are kept in wall-clock time, so these tests run on real time; they
//! wait for what they check, never for a fixed time.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{config, count, ended, resumed_once_by};
use troupe::{Troupe, TroupeConfig};
use troupe_core::AgentId;
use troupe_core::bus::MemoryBus;
use troupe_core::ledger::EventKind;
use troupe_core::store::Stores;
use troupe_core::task::{SubtaskStatus, TaskRecord, TaskStatus};
use troupe_llm::mock::MockLlm;

fn quick_leases() -> TroupeConfig {
    let mut c = config();
    c.coordinator.lease_ttl = Duration::from_millis(600);
    c.coordinator.scan_interval = Duration::from_millis(100);
    c
}

/// Coordinator A, which submits and will crash, and coordinator B, which
/// hosts the workers and takes over; both on one bus and store.
async fn pair(bus: &Arc<MemoryBus>, stores: &Stores) -> (Troupe, Troupe) {
    let mut off = quick_leases();
    off.coordinator.takeover = false;
    let build = |name: &str, config: TroupeConfig, workers: bool| {
        Troupe::builder()
            .llm(MockLlm::builtin())
            .bus(bus.clone())
            .stores(stores.clone())
            .config(config)
            .host_workers(workers)
            .agent_id(AgentId::new(name).unwrap())
            .build()
    };
    let a = build("coordinator-a", off, false).await.unwrap();
    let b = build("coordinator-b", quick_leases(), true).await.unwrap();
    (a, b)
}

/// Runs a goal on A with the failure point `point` set to crash once, and
/// returns the task as B finished it, with its progress ledger.
async fn crash_at(point: &str) -> (TaskRecord, Vec<troupe_core::ledger::ProgressEntry>) {
    let scenario = fail::FailScenario::setup();
    fail::cfg(point, "1*return").unwrap();
    let bus = Arc::new(MemoryBus::default());
    let stores = Stores::memory();
    let (a, b) = pair(&bus, &stores).await;
    let handle = a.submit("Write a haiku about rust").await.unwrap();
    let id = handle.id();
    // A's driver stops at the point, leaving the task as stored.
    let left = handle.wait().await.unwrap();
    assert!(!left.status.is_terminal(), "A ended the task: {left:#?}");
    let task = ended(&b, id).await;
    let progress = b.progress(id).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
    scenario.teardown();
    (task, progress)
}

/// The steps B took after it resumed the task, and there was exactly one resume, by B.
fn resumed_by_b(progress: &[troupe_core::ledger::ProgressEntry]) {
    resumed_once_by(progress, "coordinator-b");
    assert_eq!(count(progress, EventKind::TaskCompleted), 1);
    assert!(progress.windows(2).all(|w| w[1].step == w[0].step + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_planning_is_finished_with_that_plan() {
    let (task, progress) = crash_at("driver::planned").await;
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    resumed_by_b(&progress);
    // B carried on with A's plan: one plan, no second planning.
    assert_eq!(count(&progress, EventKind::PlanAccepted), 1);
    assert_eq!(count(&progress, EventKind::PlanningStarted), 1);
    assert!(
        task.subtasks.iter().all(|s| s.attempts == 1),
        "{:#?}",
        task.subtasks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_dispatching_dispatches_again() {
    let (task, progress) = crash_at("driver::dispatched").await;
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    resumed_by_b(&progress);
    // The attempts A had sent were failed for a retry and sent again by B.
    let first: Vec<_> = progress
        .iter()
        .filter(|e| e.event == EventKind::SubtaskDispatched && e.agent.as_str() == "coordinator-a")
        .filter_map(|e| e.subtask_id.clone())
        .collect();
    assert!(!first.is_empty());
    for id in first {
        let s = task.subtasks.iter().find(|s| s.id == id).unwrap();
        assert_eq!(
            (s.status, s.attempts),
            (SubtaskStatus::Completed, 2),
            "{s:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_acknowledging_a_result_keeps_the_result() {
    let (task, progress) = crash_at("driver::result_stored").await;
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    resumed_by_b(&progress);
    // The result A stored before the crash stands: its subtask is not done
    // again, and every subtask is completed exactly once.
    let resumed_at = progress
        .iter()
        .find(|e| e.event == EventKind::TaskResumed)
        .unwrap()
        .step;
    let kept: Vec<_> = progress
        .iter()
        .filter(|e| e.event == EventKind::SubtaskCompleted && e.step < resumed_at)
        .filter_map(|e| e.subtask_id.clone())
        .collect();
    assert_eq!(kept.len(), 1, "{progress:#?}");
    let s = task.subtasks.iter().find(|s| s.id == kept[0]).unwrap();
    assert_eq!(s.attempts, 1, "{s:#?}");
    for s in &task.subtasks {
        let completions = progress
            .iter()
            .filter(|e| {
                e.event == EventKind::SubtaskCompleted && e.subtask_id.as_ref() == Some(&s.id)
            })
            .count();
        assert_eq!(completions, 1, "{}: {progress:#?}", s.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_end_is_stored_ends_the_task_once() {
    let (task, progress) = crash_at("driver::ending").await;
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    resumed_by_b(&progress);
    // Every subtask was done once; only the final answer was written again.
    assert!(
        task.subtasks.iter().all(|s| s.attempts == 1),
        "{:#?}",
        task.subtasks
    );
    assert_eq!(count(&progress, EventKind::SynthesisStarted), 2);
}
