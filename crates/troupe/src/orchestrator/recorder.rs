//! Writing the progress ledger and telling in-process observers.

use std::sync::Arc;

use tokio::sync::broadcast;
use troupe_core::ledger::{EventKind, NewProgressEntry, ProgressEntry};
use troupe_core::store::{ProgressStore, StoreError};
use troupe_core::{AgentId, TaskId};

/// Appends progress entries and broadcasts each stored one.
#[derive(Clone)]
pub(crate) struct Recorder {
    agent: AgentId,
    progress: Arc<dyn ProgressStore>,
    events: broadcast::Sender<ProgressEntry>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    pub(crate) fn new(
        agent: AgentId,
        progress: Arc<dyn ProgressStore>,
        events: broadcast::Sender<ProgressEntry>,
    ) -> Self {
        Self {
            agent,
            progress,
            events,
        }
    }

    /// Stores `entry`, then tells observers.
    pub(crate) async fn record(
        &self,
        entry: NewProgressEntry,
    ) -> Result<ProgressEntry, StoreError> {
        let stored = self.progress.append(entry).await?;
        tracing::debug!(step = stored.step, event = %stored.event, subtask_id = ?stored.subtask_id,
            agent_id = %stored.agent, detail = %stored.detail, "progress");
        // Nobody listening is fine; a lagging listener misses entries, the store has them all.
        let _ = self.events.send(stored.clone());
        Ok(stored)
    }

    /// Records a task-level entry, logging (not failing) when the store refuses it:
    /// for notes whose loss must not end the task.
    pub(crate) async fn note(&self, task_id: TaskId, event: EventKind, detail: String) {
        let entry = NewProgressEntry::task(task_id, &self.agent, event, detail);
        if let Err(e) = self.record(entry).await {
            tracing::warn!(error = %e, "could not record a progress entry");
        }
    }

    /// A new receiver of stored entries.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ProgressEntry> {
        self.events.subscribe()
    }
}
