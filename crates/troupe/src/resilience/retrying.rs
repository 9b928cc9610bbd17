//! [`Retrying`]: one wrapper that retries the operations of a store or a bus
//! by a [`RetryPolicy`] when they fail for a passing reason (`is_retryable`:
//! the database or broker unavailable, a queue full). Permanent errors pass
//! through at once. It implements each seam it wraps, and only the seam's
//! own operations: a bus's capabilities (dead letters, registry, depth) are
//! asked of the bus itself, not of this wrapper.
//!
//! Retrying a write is safe here because the runtime's writes are keyed:
//! subtask changes and plan revisions apply once; a task created by an
//! attempt whose answer was lost is found by the retry (`Conflict` then means
//! done). A progress entry appended by an attempt whose answer was lost may
//! be appended twice: the ledger then shows one step twice.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use troupe_core::bus::{Bus, BusError, Subscription};
use troupe_core::envelope::Envelope;
use troupe_core::ledger::{Applied, NewProgressEntry, ProgressEntry, SubtaskChange};
use troupe_core::store::{
    Checkpoint, CheckpointStore, Lease, LeaseStore, ProgressStore, StoreError, Stores, TaskQuery,
    TaskStore, TaskUpdate,
};
use troupe_core::task::{SubtaskRecord, TaskRecord, TaskSummary};
use troupe_core::{AgentId, SubtaskId, TaskId};

use super::{RetryPolicy, Retryable};

/// `inner` with its operations retried by `policy`.
pub(crate) struct Retrying<T: ?Sized> {
    inner: Arc<T>,
    policy: RetryPolicy,
}

impl<T: ?Sized> Retrying<T> {
    pub(crate) fn new(inner: Arc<T>, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }

    /// Runs `op` (named `what` in the log) until it succeeds, fails for good,
    /// or the policy gives up. `op` gets the attempt number, from 1.
    async fn retry<V, E, F, Fut>(&self, what: &'static str, op: F) -> Result<V, E>
    where
        E: Retryable + std::fmt::Display,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.policy
            .run(op, |attempt, e: &E, wait: Duration| {
                tracing::warn!(operation = what, attempt, error = %e,
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "operation failed; retrying");
            })
            .await
    }
}

/// A keyed change that a retry finds already made was made by an earlier
/// attempt whose answer was lost: it counts as applied.
async fn applied_once(
    attempt: u32,
    write: impl Future<Output = Result<Applied, StoreError>>,
) -> Result<Applied, StoreError> {
    match write.await {
        Ok(Applied::Unchanged) if attempt > 1 => Ok(Applied::Changed),
        other => other,
    }
}

/// `stores` with every operation retried by `policy`.
pub(crate) fn retrying_stores(stores: Stores, policy: RetryPolicy) -> Stores {
    Stores {
        tasks: Arc::new(Retrying::new(stores.tasks, policy.clone())),
        progress: Arc::new(Retrying::new(stores.progress, policy.clone())),
        leases: Arc::new(Retrying::new(stores.leases, policy.clone())),
        checkpoints: Arc::new(Retrying::new(stores.checkpoints, policy)),
    }
}

#[async_trait]
impl TaskStore for Retrying<dyn TaskStore> {
    async fn create_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        self.retry("create_task", |attempt| async move {
            match self.inner.create_task(task).await {
                // An earlier attempt wrote it and its answer was lost.
                Err(StoreError::Conflict(_)) if attempt > 1 => Ok(()),
                other => other,
            }
        })
        .await
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.retry("get_task", |_| self.inner.get_task(id)).await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskSummary>, StoreError> {
        self.retry("list_tasks", |_| self.inner.list_tasks(query))
            .await
    }

    async fn update_task(&self, id: TaskId, update: &TaskUpdate) -> Result<Applied, StoreError> {
        self.retry("update_task", |attempt| {
            applied_once(attempt, self.inner.update_task(id, update))
        })
        .await
    }

    async fn save_plan(
        &self,
        id: TaskId,
        revision: u32,
        facts: &[String],
        subtasks: &[SubtaskRecord],
    ) -> Result<(), StoreError> {
        self.retry("save_plan", |_| {
            self.inner.save_plan(id, revision, facts, subtasks)
        })
        .await
    }

    async fn update_subtask(
        &self,
        id: TaskId,
        subtask: &SubtaskId,
        change: &SubtaskChange,
        fence: Option<u64>,
    ) -> Result<Applied, StoreError> {
        self.retry("update_subtask", |attempt| {
            applied_once(
                attempt,
                self.inner.update_subtask(id, subtask, change, fence),
            )
        })
        .await
    }
}

#[async_trait]
impl ProgressStore for Retrying<dyn ProgressStore> {
    async fn append(&self, entry: NewProgressEntry) -> Result<ProgressEntry, StoreError> {
        self.retry("append", |_| self.inner.append(entry.clone()))
            .await
    }

    async fn entries(
        &self,
        task: TaskId,
        after_step: u64,
        limit: usize,
    ) -> Result<Vec<ProgressEntry>, StoreError> {
        self.retry("entries", |_| self.inner.entries(task, after_step, limit))
            .await
    }
}

/// An acquisition whose answer was lost looks, on the retry, like a lease
/// held by someone (`None`): the task is then taken again once that lease
/// lapses, which costs time, not correctness.
#[async_trait]
impl LeaseStore for Retrying<dyn LeaseStore> {
    async fn acquire(
        &self,
        task: TaskId,
        owner: &AgentId,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        self.retry("acquire_lease", |_| self.inner.acquire(task, owner, ttl))
            .await
    }

    async fn renew(
        &self,
        owner: &AgentId,
        held: &[(TaskId, u64)],
        ttl: Duration,
    ) -> Result<Vec<TaskId>, StoreError> {
        self.retry("renew_leases", |_| self.inner.renew(owner, held, ttl))
            .await
    }

    async fn release(&self, task: TaskId, owner: &AgentId, epoch: u64) -> Result<(), StoreError> {
        self.retry("release_lease", |_| self.inner.release(task, owner, epoch))
            .await
    }

    async fn orphaned(&self, grace: Duration, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        self.retry("orphaned_tasks", |_| self.inner.orphaned(grace, limit))
            .await
    }
}

#[async_trait]
impl CheckpointStore for Retrying<dyn CheckpointStore> {
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.retry("save_checkpoint", |_| {
            self.inner.save_checkpoint(checkpoint)
        })
        .await
    }

    async fn latest_checkpoint(&self, task: TaskId) -> Result<Option<Checkpoint>, StoreError> {
        self.retry("latest_checkpoint", |_| self.inner.latest_checkpoint(task))
            .await
    }

    async fn prune_checkpoints(&self) -> Result<u64, StoreError> {
        self.retry("prune_checkpoints", |_| self.inner.prune_checkpoints())
            .await
    }
}

/// Publishes and subscriptions are retried; receiving is not (consumers
/// already retry their receives).
#[async_trait]
impl Bus for Retrying<dyn Bus> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn publish(&self, topic: &str, envelope: Envelope) -> Result<(), BusError> {
        self.retry("publish", |_| self.inner.publish(topic, envelope.clone()))
            .await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &AgentId,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.retry("subscribe", |_| {
            self.inner.subscribe(topic, group, consumer)
        })
        .await
    }
}
