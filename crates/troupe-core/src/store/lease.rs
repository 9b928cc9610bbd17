//! Task leases: which coordinator drives a task, until when, under which epoch.
//!
//! A coordinator drives a task only while it holds the task's lease, and
//! renews it well inside its time to live. When a coordinator dies its leases
//! expire, and another coordinator [`acquire`](LeaseStore::acquire)s the task
//! and resumes it from its checkpoint and the task ledger. Every acquisition
//! raises the task's **epoch**, a fencing token: a write that carries an older
//! epoch ([`TaskUpdate::fence`](super::TaskUpdate::fence),
//! [`Checkpoint::epoch`](super::Checkpoint::epoch)) is refused with
//! [`StoreError::Fenced`](super::StoreError::Fenced), so a coordinator that was
//! presumed dead cannot overwrite its successor's work.
//!
//! Stores that can (PostgreSQL) take "now" from the database's clock, so the
//! coordinators' clocks need not agree.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::ids::{AgentId, TaskId};

/// A coordinator's claim on a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The task.
    pub task: TaskId,
    /// The coordinator holding it.
    pub owner: AgentId,
    /// The fencing token: raised by every acquisition (the first is 1).
    pub epoch: u64,
    /// When it lapses unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// Task leases.
///
/// ```
/// use std::time::Duration;
/// use troupe_core::store::{LeaseStore, MemoryStore, TaskStore};
/// use troupe_core::task::TaskRecord;
/// use troupe_core::{AgentId, TaskId};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::default();
/// let task = TaskRecord::new(TaskId::new(), "goal", troupe_core::time::now());
/// store.create_task(&task).await.unwrap();
/// let (a, b) = (AgentId::new("coordinator-a").unwrap(), AgentId::new("coordinator-b").unwrap());
///
/// let lease = store.acquire(task.id, &a, Duration::from_secs(30)).await.unwrap().unwrap();
/// assert_eq!(lease.epoch, 1);
/// // Held and live: nobody else gets it.
/// assert!(store.acquire(task.id, &b, Duration::from_secs(30)).await.unwrap().is_none());
/// // Renewal keeps it; a released lease can be taken at once, under a new epoch.
/// assert_eq!(store.renew(&a, &[(task.id, 1)], Duration::from_secs(30)).await.unwrap(), vec![task.id]);
/// store.release(task.id, &a, 1).await.unwrap();
/// assert_eq!(store.acquire(task.id, &b, Duration::from_secs(30)).await.unwrap().unwrap().epoch, 2);
/// # });
/// ```
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes the lease of an unfinished task for `owner` until `ttl` from now,
    /// if nobody holds a live one, and raises its epoch. `None` when another
    /// coordinator holds it (or `owner` itself does), the task has ended, or
    /// it does not exist.
    async fn acquire(
        &self,
        task: TaskId,
        owner: &AgentId,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError>;

    /// Extends to `ttl` from now the leases among `held` (task, epoch) that
    /// `owner` still holds under that epoch, and returns their tasks. A task
    /// missing from the answer is lost: someone else took it, or it ended.
    async fn renew(
        &self,
        owner: &AgentId,
        held: &[(TaskId, u64)],
        ttl: Duration,
    ) -> Result<Vec<TaskId>, StoreError>;

    /// Gives the lease up (the coordinator is stopping): anyone may take the
    /// task at once. Does nothing unless `owner` holds it under `epoch`.
    async fn release(&self, task: TaskId, owner: &AgentId, epoch: u64) -> Result<(), StoreError>;

    /// Up to `limit` unfinished tasks nobody drives: their lease lapsed, or
    /// none was ever taken and the task is older than `grace`. Oldest first.
    async fn orphaned(&self, grace: Duration, limit: usize) -> Result<Vec<TaskId>, StoreError>;
}
