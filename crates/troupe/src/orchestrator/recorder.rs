//! Writing the progress ledger and telling in-process observers.

use std::sync::Arc;

use tokio::sync::broadcast;
use troupe_core::ledger::{EventKind, NewProgressEntry, ProgressEntry};
use troupe_core::store::{ProgressStore, StoreError};
use troupe_core::{AgentId, TaskId};

use crate::telemetry::events::{StepStored, emit};

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
        emit(StepStored(&stored));
        // A lagging listener misses entries (it reads them from the store);
        // with nobody listening, the entry is not even copied.
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(stored.clone());
        }
        Ok(stored)
    }

    /// Where the orchestrator notes what happens to `task` while a long call
    /// runs, under the lease epoch `fence` (see [`Notes`]).
    pub(crate) fn notes(&self, task: TaskId, fence: Option<u64>) -> Notes {
        Notes {
            recorder: self.clone(),
            task,
            fence,
        }
    }

    /// A new receiver of stored entries.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ProgressEntry> {
        self.events.subscribe()
    }
}

/// Task-level notes of the orchestrator written while an LLM call runs
/// (a plan rejected, a call retried): fenced by the driver's lease like every
/// other write of the task, and logged rather than fatal when the store
/// refuses one, since their loss must not end the task.
#[derive(Debug, Clone)]
pub(crate) struct Notes {
    recorder: Recorder,
    task: TaskId,
    fence: Option<u64>,
}

impl Notes {
    /// Records `detail` as an `event` of the task.
    pub(crate) async fn note(&self, event: EventKind, detail: String) {
        let entry = NewProgressEntry::task(self.task, &self.recorder.agent, event, detail)
            .with_fence(self.fence);
        if let Err(e) = self.recorder.record(entry).await {
            tracing::warn!(error = %e, "could not record a progress entry");
        }
    }
}
