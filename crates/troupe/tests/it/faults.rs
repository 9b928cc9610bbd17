//! Store and bus faults: operations that fail for a moment are retried by
//! their policies, and a store that dies fails the task with the reason
//! instead of hanging.

use std::sync::Arc;
use std::time::Duration;

use troupe_core::ledger::EventKind;
use troupe_core::store::StoreError;
use troupe_core::task::TaskStatus;
use troupe_llm::mock::MockLlm;

use crate::support::config;

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
