//! [`MemoryStore`]: both ledgers in process memory, for tests and `--store memory`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    CHECKPOINTS_KEPT, Checkpoint, CheckpointStore, Lease, LeaseStore, ProgressStore, StoreError,
    TaskQuery, TaskStore, TaskUpdate,
};
use crate::ids::{AgentId, SubtaskId, TaskId};
use crate::ledger::{Applied, NewProgressEntry, ProgressEntry, SubtaskChange};
use crate::task::{SubtaskRecord, SubtaskStatus, TaskRecord, TaskSummary};

/// Both ledgers in memory; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tasks: HashMap<TaskId, TaskRecord>,
    progress: HashMap<TaskId, Vec<ProgressEntry>>,
    leases: HashMap<TaskId, LeaseRow>,
    /// Oldest first.
    checkpoints: HashMap<TaskId, Vec<Checkpoint>>,
}

/// A task's lease state; a task without a row was never leased (epoch 0).
#[derive(Debug)]
struct LeaseRow {
    owner: Option<AgentId>,
    epoch: u64,
    until: DateTime<Utc>,
}

impl Inner {
    fn epoch(&self, task: TaskId) -> u64 {
        self.leases.get(&task).map_or(0, |l| l.epoch)
    }

    /// Whether a write of `task` under `fence` (a lease epoch, if any) may
    /// go ahead: `NotFound` if the task is missing, `Fenced` if its epoch
    /// is not the fence.
    fn check_fence(&self, task: TaskId, fence: Option<u64>) -> Result<(), StoreError> {
        if !self.tasks.contains_key(&task) {
            return Err(StoreError::NotFound(task));
        }
        if fence.is_some_and(|epoch| epoch != self.epoch(task)) {
            return Err(StoreError::Fenced(task));
        }
        Ok(())
    }
}

/// `now + ttl`, saturating.
fn after(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent, so a poisoned lock is safe to reuse.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl TaskStore for MemoryStore {
    async fn create_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.tasks.contains_key(&task.id) {
            return Err(StoreError::Conflict(task.id));
        }
        inner.tasks.insert(task.id, task.clone());
        Ok(())
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self.lock().tasks.get(&id).cloned())
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskSummary>, StoreError> {
        let inner = self.lock();
        let mut tasks: Vec<&TaskRecord> = inner
            .tasks
            .values()
            .filter(|t| query.status.is_none_or(|s| t.status == s))
            .filter(|t| query.before.is_none_or(|b| t.id < b))
            .collect();
        tasks.sort_by_key(|t| std::cmp::Reverse(t.id));
        Ok(tasks.into_iter().take(query.limit).map(summary).collect())
    }

    async fn update_task(&self, id: TaskId, update: &TaskUpdate) -> Result<Applied, StoreError> {
        let mut inner = self.lock();
        inner.check_fence(id, update.fence)?;
        let task = inner.tasks.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        let applied = update.apply(task);
        // An ended task is driven by nobody.
        if task.status.is_terminal()
            && let Some(row) = inner.leases.get_mut(&id)
        {
            row.owner = None;
        }
        Ok(applied)
    }

    async fn save_plan(
        &self,
        id: TaskId,
        revision: u32,
        facts: &[String],
        subtasks: &[SubtaskRecord],
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let task = inner.tasks.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        for s in &mut task.subtasks {
            SubtaskChange::Superseded.apply(s);
        }
        task.subtasks.extend(subtasks.iter().cloned());
        task.plan_revision = revision;
        task.facts = facts.to_vec();
        Ok(())
    }

    async fn update_subtask(
        &self,
        id: TaskId,
        subtask: &SubtaskId,
        change: &SubtaskChange,
        fence: Option<u64>,
    ) -> Result<Applied, StoreError> {
        let mut inner = self.lock();
        inner.check_fence(id, fence)?;
        let task = inner.tasks.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        Ok(task
            .subtasks
            .iter_mut()
            .find(|s| &s.id == subtask)
            .map_or(Applied::Unchanged, |s| change.apply(s)))
    }
}

#[async_trait]
impl ProgressStore for MemoryStore {
    async fn append(&self, entry: NewProgressEntry) -> Result<ProgressEntry, StoreError> {
        let mut inner = self.lock();
        inner.check_fence(entry.task_id, entry.fence)?;
        let list = inner.progress.entry(entry.task_id).or_default();
        let entry = entry.with_step(list.len() as u64 + 1);
        list.push(entry.clone());
        Ok(entry)
    }

    async fn entries(
        &self,
        task: TaskId,
        after_step: u64,
        limit: usize,
    ) -> Result<Vec<ProgressEntry>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .progress
            .get(&task)
            .map(|l| {
                l.iter()
                    .filter(|e| e.step > after_step)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn acquire(
        &self,
        task: TaskId,
        owner: &AgentId,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let mut inner = self.lock();
        let now = crate::time::now();
        let open = inner
            .tasks
            .get(&task)
            .is_some_and(|t| !t.status.is_terminal());
        let held = inner
            .leases
            .get(&task)
            .is_some_and(|l| l.owner.is_some() && l.until > now);
        if !open || held {
            return Ok(None);
        }
        let epoch = inner.epoch(task) + 1;
        let until = after(now, ttl);
        inner.leases.insert(
            task,
            LeaseRow {
                owner: Some(owner.clone()),
                epoch,
                until,
            },
        );
        Ok(Some(Lease {
            task,
            owner: owner.clone(),
            epoch,
            expires_at: until,
        }))
    }

    async fn renew(
        &self,
        owner: &AgentId,
        held: &[(TaskId, u64)],
        ttl: Duration,
    ) -> Result<Vec<TaskId>, StoreError> {
        let mut inner = self.lock();
        let until = after(crate::time::now(), ttl);
        let mut kept = Vec::new();
        for (task, epoch) in held {
            let open = inner
                .tasks
                .get(task)
                .is_some_and(|t| !t.status.is_terminal());
            if let Some(row) = inner.leases.get_mut(task)
                && open
                && row.epoch == *epoch
                && row.owner.as_ref() == Some(owner)
            {
                row.until = until;
                kept.push(*task);
            }
        }
        Ok(kept)
    }

    async fn release(&self, task: TaskId, owner: &AgentId, epoch: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(row) = inner.leases.get_mut(&task)
            && row.epoch == epoch
            && row.owner.as_ref() == Some(owner)
        {
            row.owner = None;
        }
        Ok(())
    }

    async fn orphaned(&self, grace: Duration, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        let inner = self.lock();
        let now = crate::time::now();
        let cutoff = chrono::Duration::from_std(grace)
            .ok()
            .and_then(|g| now.checked_sub_signed(g))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut found: Vec<&TaskRecord> = inner
            .tasks
            .values()
            .filter(|t| !t.status.is_terminal())
            .filter(|t| match inner.leases.get(&t.id) {
                None => t.created_at < cutoff,
                Some(l) => l.owner.is_none() || l.until <= now,
            })
            .collect();
        found.sort_by_key(|t| t.id);
        Ok(found.into_iter().take(limit).map(|t| t.id).collect())
    }
}

#[async_trait]
impl CheckpointStore for MemoryStore {
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let id = checkpoint.task;
        inner.check_fence(id, Some(checkpoint.epoch))?;
        let list = inner.checkpoints.entry(id).or_default();
        list.push(checkpoint.clone());
        let excess = list.len().saturating_sub(CHECKPOINTS_KEPT);
        list.drain(..excess);
        Ok(())
    }

    async fn latest_checkpoint(&self, task: TaskId) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self
            .lock()
            .checkpoints
            .get(&task)
            .and_then(|l| l.last().cloned()))
    }

    async fn prune_checkpoints(&self) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let ended: Vec<TaskId> = inner
            .checkpoints
            .keys()
            .filter(|id| inner.tasks.get(id).is_none_or(|t| t.status.is_terminal()))
            .copied()
            .collect();
        let mut removed = 0;
        for id in ended {
            removed += inner.checkpoints.remove(&id).map_or(0, |l| l.len() as u64);
        }
        Ok(removed)
    }
}

fn summary(task: &TaskRecord) -> TaskSummary {
    let current = task
        .subtasks
        .iter()
        .filter(|s| s.revision == task.plan_revision);
    let (total, completed) = current.fold((0u32, 0u32), |(t, c), s| {
        (t + 1, c + u32::from(s.status == SubtaskStatus::Completed))
    });
    TaskSummary {
        id: task.id,
        goal: task.goal.clone(),
        status: task.status,
        subtasks_total: total,
        subtasks_completed: completed,
        created_at: task.created_at,
        updated_at: task.updated_at,
    }
}
