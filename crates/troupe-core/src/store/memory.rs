//! [`MemoryStore`]: both ledgers in process memory, for tests and `--store memory`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{ProgressStore, StoreError, TaskQuery, TaskStore, TaskUpdate};
use crate::ids::{SubtaskId, TaskId};
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
        let task = inner.tasks.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        Ok(update.apply(task))
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
    ) -> Result<Applied, StoreError> {
        let mut inner = self.lock();
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
        if !inner.tasks.contains_key(&entry.task_id) {
            return Err(StoreError::NotFound(entry.task_id));
        }
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
