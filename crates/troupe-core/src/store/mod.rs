//! The store seam, split by aggregate: [`TaskStore`] keeps the task ledger
//! (tasks and their subtasks), [`ProgressStore`] the append-only progress
//! ledger; [`LeaseStore`] says which coordinator drives a task and
//! [`CheckpointStore`] keeps what it needs to resume one another coordinator
//! was driving. The store is the source of truth; the bus only carries messages.
//!
//! Every implementation applies [`SubtaskChange`] with the same guards as
//! [`TaskLedger`](crate::ledger::TaskLedger), so a duplicate delivery changes
//! nothing, and passes the conformance suite in `troupe-testkit`.

mod checkpoint;
mod lease;
mod memory;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use checkpoint::{CHECKPOINTS_KEPT, Checkpoint, CheckpointStore};
pub use lease::{Lease, LeaseStore};
pub use memory::MemoryStore;

use crate::ids::{SubtaskId, TaskId};
use crate::ledger::{Applied, NewProgressEntry, ProgressEntry, SubtaskChange};
use crate::task::{SubtaskRecord, TaskRecord, TaskStatus, TaskSummary, Usage};

/// A store operation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No task has this id.
    #[error("no task {0}")]
    NotFound(TaskId),
    /// A task with this id exists already.
    #[error("task {0} exists already")]
    Conflict(TaskId),
    /// The database cannot be reached or is busy; retry with backoff.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be read back.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// The schema could not be brought up to date.
    #[error("store migration failed: {0}")]
    Migration(String),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// Any other database error.
    #[error("store error: {0}")]
    Backend(String),
    /// The write carried an old lease epoch: another coordinator took the task.
    #[error("task {0} is driven by another coordinator now")]
    Fenced(TaskId),
}

impl StoreError {
    /// Whether the same operation may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// A change to a task's own fields. `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskUpdate {
    /// The new status. A task that has ended takes no more updates.
    pub status: Option<TaskStatus>,
    /// The final answer.
    pub result: Option<String>,
    /// The reason it failed.
    pub error: Option<String>,
    /// The total usage so far (replaces the stored one).
    pub usage: Option<Usage>,
    /// When the change happened.
    pub at: DateTime<Utc>,
    /// The lease epoch the writer holds: the update is refused with
    /// [`StoreError::Fenced`] unless it is the task's current one. `None`
    /// writes whatever the lease (a single process, or a cancel by an operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
}

impl TaskUpdate {
    /// An update of the status only.
    pub fn status(status: TaskStatus) -> Self {
        Self {
            status: Some(status),
            result: None,
            error: None,
            usage: None,
            at: crate::time::now(),
            fence: None,
        }
    }

    /// Applies the update to a record, unless the task has ended.
    pub fn apply(&self, record: &mut TaskRecord) -> Applied {
        if record.status.is_terminal() {
            return Applied::Unchanged;
        }
        if let Some(status) = self.status {
            record.status = status;
            if status.is_terminal() {
                record.finished_at = Some(self.at);
            }
        }
        if let Some(result) = &self.result {
            record.result = Some(result.clone());
        }
        if let Some(error) = &self.error {
            record.error = Some(error.clone());
        }
        if let Some(usage) = self.usage {
            record.usage = usage;
        }
        record.updated_at = self.at;
        Applied::Changed
    }
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskQuery {
    /// Only tasks with this status.
    pub status: Option<TaskStatus>,
    /// Only tasks older than this one (for the next page).
    pub before: Option<TaskId>,
    /// The most tasks to return.
    pub limit: usize,
}

impl Default for TaskQuery {
    fn default() -> Self {
        Self {
            status: None,
            before: None,
            limit: 50,
        }
    }
}

/// The task ledger: tasks and their subtasks.
///
/// ```
/// use troupe_core::store::{MemoryStore, TaskStore, TaskUpdate};
/// use troupe_core::task::{TaskRecord, TaskStatus};
/// use troupe_core::TaskId;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::default();
/// let task = TaskRecord::new(TaskId::new(), "write a haiku", chrono::Utc::now());
/// store.create_task(&task).await.unwrap();
/// store.update_task(task.id, &TaskUpdate::status(TaskStatus::Planning)).await.unwrap();
/// let stored = store.get_task(task.id).await.unwrap().unwrap();
/// assert_eq!(stored.status, TaskStatus::Planning);
/// # });
/// ```
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Stores a new task. Fails with [`StoreError::Conflict`] if the id is taken.
    async fn create_task(&self, task: &TaskRecord) -> Result<(), StoreError>;

    /// The task with its subtasks, if it exists.
    async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError>;

    /// A page of tasks, newest first.
    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskSummary>, StoreError>;

    /// Changes a task's own fields; a task that has ended is left as it is.
    async fn update_task(&self, id: TaskId, update: &TaskUpdate) -> Result<Applied, StoreError>;

    /// Installs plan revision `revision` in one step: open subtasks of earlier
    /// revisions are superseded, `subtasks` are added after the existing ones,
    /// and `facts` replace the task's facts.
    async fn save_plan(
        &self,
        id: TaskId,
        revision: u32,
        facts: &[String],
        subtasks: &[SubtaskRecord],
    ) -> Result<(), StoreError>;

    /// Applies a guarded change to one subtask. With a `fence` (the writer's
    /// lease epoch), a task whose epoch is another is refused with
    /// [`StoreError::Fenced`] and nothing changes.
    async fn update_subtask(
        &self,
        id: TaskId,
        subtask: &SubtaskId,
        change: &SubtaskChange,
        fence: Option<u64>,
    ) -> Result<Applied, StoreError>;
}

/// The progress ledger: what happened, step by step.
///
/// ```
/// use troupe_core::ledger::{EventKind, NewProgressEntry};
/// use troupe_core::store::{MemoryStore, ProgressStore, TaskStore};
/// use troupe_core::task::TaskRecord;
/// use troupe_core::{AgentId, TaskId};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::default();
/// let task = TaskRecord::new(TaskId::new(), "goal", chrono::Utc::now());
/// store.create_task(&task).await.unwrap();
/// let me = AgentId::new("orchestrator-1").unwrap();
/// let entry = store
///     .append(NewProgressEntry::task(task.id, &me, EventKind::TaskSubmitted, "accepted"))
///     .await
///     .unwrap();
/// assert_eq!(entry.step, 1);
/// assert_eq!(store.entries(task.id, 0, 100).await.unwrap(), vec![entry]);
/// # });
/// ```
#[async_trait]
pub trait ProgressStore: Send + Sync {
    /// Appends an entry and returns it with its step number (1, 2, ... per task).
    /// Fails with [`StoreError::NotFound`] if the task does not exist.
    async fn append(&self, entry: NewProgressEntry) -> Result<ProgressEntry, StoreError>;

    /// Up to `limit` entries of a task with a step above `after_step`, in step order.
    async fn entries(
        &self,
        task: TaskId,
        after_step: u64,
        limit: usize,
    ) -> Result<Vec<ProgressEntry>, StoreError>;
}

/// The stores a runtime uses, as shared trait objects.
#[derive(Clone)]
pub struct Stores {
    /// The task ledger.
    pub tasks: Arc<dyn TaskStore>,
    /// The progress ledger.
    pub progress: Arc<dyn ProgressStore>,
    /// Task leases.
    pub leases: Arc<dyn LeaseStore>,
    /// Checkpoints.
    pub checkpoints: Arc<dyn CheckpointStore>,
}

impl Stores {
    /// Every aggregate kept by one backend.
    pub fn from_backend<S>(backend: Arc<S>) -> Self
    where
        S: TaskStore + ProgressStore + LeaseStore + CheckpointStore + 'static,
    {
        Self {
            tasks: backend.clone(),
            progress: backend.clone(),
            leases: backend.clone(),
            checkpoints: backend,
        }
    }

    /// A fresh in-memory store.
    pub fn memory() -> Self {
        Self::from_backend(Arc::new(MemoryStore::default()))
    }
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}
