//! Store and bus operations retried by a [`RetryPolicy`] when they fail for
//! a passing reason (`is_retryable`: the database or broker unavailable, a
//! queue full). Permanent errors pass through at once.
//!
//! Retrying a write is safe here because the runtime's writes are keyed:
//! subtask changes and plan revisions apply once; a task created by an
//! attempt whose answer was lost is found by the retry (`Conflict` then means
//! done). A progress entry appended by an attempt whose answer was lost may
//! be appended twice: the ledger then shows one step twice.

use std::sync::Arc;

use async_trait::async_trait;
use troupe_core::bus::{Bus, BusError, DeadLetter, Subscription};
use troupe_core::envelope::Envelope;
use troupe_core::ledger::{Applied, NewProgressEntry, ProgressEntry, SubtaskChange};
use troupe_core::store::{
    Checkpoint, CheckpointStore, Lease, LeaseStore, ProgressStore, StoreError, Stores, TaskQuery,
    TaskStore, TaskUpdate,
};
use troupe_core::task::{SubtaskRecord, TaskRecord, TaskSummary};
use troupe_core::{AgentId, SubtaskId, TaskId};

use super::RetryPolicy;

fn log_retry<E: std::fmt::Display>(what: &'static str) -> impl FnMut(u32, &E, std::time::Duration) {
    move |attempt, e, wait| {
        tracing::warn!(operation = what, attempt, error = %e,
            retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "operation failed; retrying");
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
        tasks: Arc::new(RetryingTasks {
            inner: stores.tasks,
            policy: policy.clone(),
        }),
        progress: Arc::new(RetryingProgress {
            inner: stores.progress,
            policy: policy.clone(),
        }),
        leases: Arc::new(RetryingLeases {
            inner: stores.leases,
            policy: policy.clone(),
        }),
        checkpoints: Arc::new(RetryingCheckpoints {
            inner: stores.checkpoints,
            policy,
        }),
    }
}

struct RetryingTasks {
    inner: Arc<dyn TaskStore>,
    policy: RetryPolicy,
}

#[async_trait]
impl TaskStore for RetryingTasks {
    async fn create_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        self.policy
            .run(
                |attempt| async move {
                    match self.inner.create_task(task).await {
                        // An earlier attempt wrote it and its answer was lost.
                        Err(StoreError::Conflict(_)) if attempt > 1 => Ok(()),
                        other => other,
                    }
                },
                log_retry("create_task"),
            )
            .await
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.policy
            .run(|_| self.inner.get_task(id), log_retry("get_task"))
            .await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskSummary>, StoreError> {
        self.policy
            .run(|_| self.inner.list_tasks(query), log_retry("list_tasks"))
            .await
    }

    async fn update_task(&self, id: TaskId, update: &TaskUpdate) -> Result<Applied, StoreError> {
        self.policy
            .run(
                |attempt| applied_once(attempt, self.inner.update_task(id, update)),
                log_retry("update_task"),
            )
            .await
    }

    async fn save_plan(
        &self,
        id: TaskId,
        revision: u32,
        facts: &[String],
        subtasks: &[SubtaskRecord],
    ) -> Result<(), StoreError> {
        self.policy
            .run(
                |_| self.inner.save_plan(id, revision, facts, subtasks),
                log_retry("save_plan"),
            )
            .await
    }

    async fn update_subtask(
        &self,
        id: TaskId,
        subtask: &SubtaskId,
        change: &SubtaskChange,
        fence: Option<u64>,
    ) -> Result<Applied, StoreError> {
        self.policy
            .run(
                |attempt| {
                    applied_once(
                        attempt,
                        self.inner.update_subtask(id, subtask, change, fence),
                    )
                },
                log_retry("update_subtask"),
            )
            .await
    }
}

struct RetryingProgress {
    inner: Arc<dyn ProgressStore>,
    policy: RetryPolicy,
}

#[async_trait]
impl ProgressStore for RetryingProgress {
    async fn append(&self, entry: NewProgressEntry) -> Result<ProgressEntry, StoreError> {
        self.policy
            .run(|_| self.inner.append(entry.clone()), log_retry("append"))
            .await
    }

    async fn entries(
        &self,
        task: TaskId,
        after_step: u64,
        limit: usize,
    ) -> Result<Vec<ProgressEntry>, StoreError> {
        self.policy
            .run(
                |_| self.inner.entries(task, after_step, limit),
                log_retry("entries"),
            )
            .await
    }
}

/// Leases with retries. An acquisition whose answer was lost looks, on the
/// retry, like a lease held by someone (`None`): the task is then taken again
/// once that lease lapses, which costs time, not correctness.
struct RetryingLeases {
    inner: Arc<dyn LeaseStore>,
    policy: RetryPolicy,
}

#[async_trait]
impl LeaseStore for RetryingLeases {
    async fn acquire(
        &self,
        task: TaskId,
        owner: &AgentId,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>, StoreError> {
        self.policy
            .run(
                |_| self.inner.acquire(task, owner, ttl),
                log_retry("acquire_lease"),
            )
            .await
    }

    async fn renew(
        &self,
        owner: &AgentId,
        held: &[(TaskId, u64)],
        ttl: std::time::Duration,
    ) -> Result<Vec<TaskId>, StoreError> {
        self.policy
            .run(
                |_| self.inner.renew(owner, held, ttl),
                log_retry("renew_leases"),
            )
            .await
    }

    async fn release(&self, task: TaskId, owner: &AgentId, epoch: u64) -> Result<(), StoreError> {
        self.policy
            .run(
                |_| self.inner.release(task, owner, epoch),
                log_retry("release_lease"),
            )
            .await
    }

    async fn orphaned(
        &self,
        grace: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<TaskId>, StoreError> {
        self.policy
            .run(
                |_| self.inner.orphaned(grace, limit),
                log_retry("orphaned_tasks"),
            )
            .await
    }
}

struct RetryingCheckpoints {
    inner: Arc<dyn CheckpointStore>,
    policy: RetryPolicy,
}

#[async_trait]
impl CheckpointStore for RetryingCheckpoints {
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.policy
            .run(
                |_| self.inner.save_checkpoint(checkpoint),
                log_retry("save_checkpoint"),
            )
            .await
    }

    async fn latest_checkpoint(&self, task: TaskId) -> Result<Option<Checkpoint>, StoreError> {
        self.policy
            .run(
                |_| self.inner.latest_checkpoint(task),
                log_retry("latest_checkpoint"),
            )
            .await
    }

    async fn prune_checkpoints(&self) -> Result<u64, StoreError> {
        self.policy
            .run(
                |_| self.inner.prune_checkpoints(),
                log_retry("prune_checkpoints"),
            )
            .await
    }
}

/// A bus whose publishes are retried by a policy; the rest passes through
/// (consumers already retry their receives).
pub(crate) struct RetryingBus {
    pub(crate) inner: Arc<dyn Bus>,
    pub(crate) policy: RetryPolicy,
}

#[async_trait]
impl Bus for RetryingBus {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn publish(&self, topic: &str, envelope: Envelope) -> Result<(), BusError> {
        self.policy
            .run(
                |_| self.inner.publish(topic, envelope.clone()),
                log_retry("publish"),
            )
            .await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &AgentId,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.policy
            .run(
                |_| self.inner.subscribe(topic, group, consumer),
                log_retry("subscribe"),
            )
            .await
    }

    async fn dead_letters(&self, topic: &str) -> Result<Vec<DeadLetter>, BusError> {
        self.inner.dead_letters(topic).await
    }

    async fn depth(&self, topic: &str) -> Result<Option<u64>, BusError> {
        self.inner.depth(topic).await
    }

    async fn requeue_dead_letters(
        &self,
        topic: &str,
        ids: Option<&[troupe_core::MessageId]>,
    ) -> Result<usize, BusError> {
        self.inner.requeue_dead_letters(topic, ids).await
    }

    async fn heartbeat(
        &self,
        info: &troupe_core::bus::WorkerInfo,
        ttl: std::time::Duration,
    ) -> Result<(), BusError> {
        self.inner.heartbeat(info, ttl).await
    }

    async fn workers(&self) -> Result<Vec<troupe_core::bus::WorkerInfo>, BusError> {
        self.inner.workers().await
    }
}
