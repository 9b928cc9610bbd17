//! Coordinators sharing tasks: leases, checkpoints, take-over.

use std::sync::Arc;
use std::time::Duration;

use troupe::{Troupe, TroupeConfig};
use troupe_core::AgentId;
use troupe_core::bus::{Bus, MemoryBus};
use troupe_core::ledger::EventKind;
use troupe_core::store::Stores;
use troupe_core::task::{SubtaskStatus, TaskStatus};
use troupe_llm::mock::MockLlm;

use crate::support::{config, count, ended, reached, resumed_once_by};

fn quick_leases() -> TroupeConfig {
    let mut c = config();
    c.coordinator.lease_ttl = Duration::from_millis(600);
    c.coordinator.scan_interval = Duration::from_millis(100);
    c.coordinator.checkpoint_every = 1;
    c
}

/// A coordinator on the shared bus and store.
async fn coordinator(
    bus: &Arc<MemoryBus>,
    stores: &Stores,
    llm: MockLlm,
    config: TroupeConfig,
    host_workers: bool,
    name: &str,
) -> Troupe {
    Troupe::builder()
        .llm(Arc::new(llm))
        .bus(bus.clone() as Arc<dyn Bus>)
        .stores(stores.clone())
        .config(config)
        .host_workers(host_workers)
        .agent_id(AgentId::new(name).unwrap())
        .build()
        .await
        .unwrap()
}

/// Calls that take `ms` each.
fn slow_work(ms: u64) -> MockLlm {
    MockLlm::builder()
        .delay(Duration::from_millis(ms))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_task_given_back_at_shutdown_is_finished_by_another_coordinator() {
    let bus = Arc::new(MemoryBus::default());
    let stores = Stores::memory();
    let mut off = quick_leases();
    off.coordinator.takeover = false;
    // A plans and dispatches; only B hosts workers (slow ones).
    let a = coordinator(
        &bus,
        &stores,
        MockLlm::builtin(),
        off,
        false,
        "coordinator-a",
    )
    .await;
    let b = coordinator(
        &bus,
        &stores,
        slow_work(300),
        quick_leases(),
        true,
        "coordinator-b",
    )
    .await;
    let handle = a.submit("Write a haiku about rust").await.unwrap();
    let id = handle.id();
    reached(&mut handle.events(), EventKind::SubtaskDispatched, None).await;
    // A stops: its driver gives the lease back, the task stays as stored.
    a.shutdown_now().await;
    let left = handle.wait().await.unwrap();
    assert_eq!(left.status, TaskStatus::Running);

    let task = ended(&b, id).await;
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    let progress = b.progress(id).await.unwrap();
    resumed_once_by(&progress, "coordinator-b");
    // The attempt A had in flight was failed for a retry (not a stall) and sent again.
    let first = progress
        .iter()
        .find(|e| e.event == EventKind::SubtaskDispatched)
        .unwrap();
    let subtask = first.subtask_id.clone().unwrap();
    let record = task.subtasks.iter().find(|s| s.id == subtask).unwrap();
    assert_eq!(record.status, SubtaskStatus::Completed);
    assert_eq!(record.attempts, 2, "{record:#?}");
    assert_eq!(count(&progress, EventKind::TaskCompleted), 1);
    let completed = progress
        .iter()
        .find(|e| e.event == EventKind::TaskCompleted)
        .unwrap();
    assert_eq!(completed.agent.as_str(), "coordinator-b");
    // Checkpoints of the ended task are pruned within a minute; at least the newest is readable now.
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_whose_lease_is_taken_stops_and_writes_nothing_more() {
    let bus = Arc::new(MemoryBus::default());
    let stores = Stores::memory();
    let mut off = quick_leases();
    off.coordinator.takeover = false;
    let a = coordinator(&bus, &stores, slow_work(400), off, true, "coordinator-a").await;
    let handle = a.submit("Write a haiku about rust").await.unwrap();
    let id = handle.id();
    reached(&mut handle.events(), EventKind::SubtaskStarted, None).await;

    // Another coordinator takes the task (as it would once A's lease lapsed
    // while A was cut off): here by releasing A's lease behind its back.
    let thief = AgentId::new("coordinator-x").unwrap();
    stores
        .leases
        .release(id, &AgentId::new("coordinator-a").unwrap(), 1)
        .await
        .unwrap();
    let stolen = stores
        .leases
        .acquire(id, &thief, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the released lease is free");
    assert_eq!(stolen.epoch, 2);

    // A's next renewal finds the lease lost: its driver stops without ending the task.
    let left = tokio::time::timeout(Duration::from_secs(5), handle.wait())
        .await
        .expect("the driver stops within a renewal period")
        .unwrap();
    assert!(!left.status.is_terminal(), "{left:#?}");
    // A's workers go on with the attempts in hand and reply to an inbox that
    // no driver reads: nothing they do may reach the task. The clock is
    // paused: one virtual second is past their 400 ms calls and the handling
    // of their replies, whatever the machine's load.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = stores.tasks.get_task(id).await.unwrap().unwrap();
    assert!(!stored.status.is_terminal(), "{stored:#?}");
    let progress = a.progress(id).await.unwrap();
    assert_eq!(count(&progress, EventKind::TaskCompleted), 0);
    // A write under the old epoch is refused by the store.
    let late = troupe_core::store::TaskUpdate {
        fence: Some(1),
        ..troupe_core::store::TaskUpdate::status(TaskStatus::Completed)
    };
    assert_eq!(
        stores.tasks.update_task(id, &late).await,
        Err(troupe_core::store::StoreError::Fenced(id))
    );
    a.shutdown_now().await;
}

#[tokio::test(start_paused = true)]
async fn a_running_task_is_checkpointed_with_the_driver_state() {
    let bus = Arc::new(MemoryBus::default());
    let stores = Stores::memory();
    let a = coordinator(
        &bus,
        &stores,
        slow_work(200),
        quick_leases(),
        true,
        "coordinator-a",
    )
    .await;
    let handle = a
        .submit_for_request("Write a haiku about rust", "req-77")
        .await
        .unwrap();
    let id = handle.id();
    // The plan takes 200 ms; the status change to running is checkpointed.
    reached(&mut handle.events(), EventKind::PlanAccepted, None).await;
    let checkpoint = stores
        .checkpoints
        .latest_checkpoint(id)
        .await
        .unwrap()
        .expect("a checkpoint at the status changes");
    assert_eq!(checkpoint.epoch, 1);
    assert_eq!(checkpoint.state["request_id"], "req-77");
    // It covers the steps recorded so far: submitted, planning started.
    assert!(checkpoint.step >= 2, "{checkpoint:?}");
    let task = handle.wait().await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    a.shutdown().await;
}
