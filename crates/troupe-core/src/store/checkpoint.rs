//! Checkpoints: what a coordinator needs, beyond the task ledger, to resume a
//! task another coordinator was driving.
//!
//! The task ledger (plan, subtask statuses, results) is always in the store;
//! a checkpoint adds the coordinator's own state (stall and re-plan counters,
//! time spent, the request the task came from) as an opaque JSON document,
//! with the progress step it was taken at. Saving is fenced by the task's
//! lease epoch; a store keeps only the newest few of a task and drops them
//! all once the task has ended.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::ids::TaskId;

/// A coordinator's state for one task at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The task.
    pub task: TaskId,
    /// The lease epoch of the coordinator that took it (its fencing token).
    pub epoch: u64,
    /// The last progress step it covers.
    pub step: u64,
    /// The coordinator's state; the store does not read it.
    pub state: serde_json::Value,
    /// When it was taken.
    pub at: DateTime<Utc>,
}

/// How many checkpoints a store keeps per task while the task runs.
pub const CHECKPOINTS_KEPT: usize = 3;

/// Checkpoints of running tasks.
///
/// ```
/// use std::time::Duration;
/// use troupe_core::store::{Checkpoint, CheckpointStore, LeaseStore, MemoryStore, TaskStore};
/// use troupe_core::task::TaskRecord;
/// use troupe_core::{AgentId, TaskId};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::default();
/// let task = TaskRecord::new(TaskId::new(), "goal", troupe_core::time::now());
/// store.create_task(&task).await.unwrap();
/// let me = AgentId::new("coordinator-a").unwrap();
/// let lease = store.acquire(task.id, &me, Duration::from_secs(30)).await.unwrap().unwrap();
///
/// let checkpoint = Checkpoint {
///     task: task.id,
///     epoch: lease.epoch,
///     step: 4,
///     state: serde_json::json!({"stalls": 1}),
///     at: troupe_core::time::now(),
/// };
/// store.save_checkpoint(&checkpoint).await.unwrap();
/// assert_eq!(store.latest_checkpoint(task.id).await.unwrap(), Some(checkpoint));
/// # });
/// ```
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// Saves a checkpoint and keeps only the task's newest
    /// [`CHECKPOINTS_KEPT`]. Refused with
    /// [`StoreError::Fenced`](super::StoreError::Fenced) when its epoch is not
    /// the task's current lease epoch; [`StoreError::NotFound`] without the task.
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    /// The task's newest checkpoint.
    async fn latest_checkpoint(&self, task: TaskId) -> Result<Option<Checkpoint>, StoreError>;

    /// Deletes every checkpoint of the tasks that have ended; returns how many.
    async fn prune_checkpoints(&self) -> Result<u64, StoreError>;
}
