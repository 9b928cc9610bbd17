//! [`Journal`]: every write a driver makes to the store, and the rules they
//! follow, in one place, so that the driver's loop only decides:
//!
//! - every write carries the lease epoch (the fence): once another
//!   coordinator has the task, the store refuses them all;
//! - a change and the progress entry that tells of it go to the store at
//!   once (they usually share one commit);
//! - the orchestrator's own tokens (planning, synthesis) ride on its next
//!   entry, so the progress ledger adds up to the task's usage;
//! - the driver's state is checkpointed at every status change and every
//!   `coordinator.checkpoint_every` turns of its loop;
//! - the last step written is known, for the checkpoint's position.

use std::sync::Arc;

use futures::future::join_all;
use troupe_core::ledger::{Applied, EventKind, NewProgressEntry, StepData, SubtaskChange};
use troupe_core::store::{Checkpoint, StoreError, TaskUpdate};
use troupe_core::task::{TaskStatus, Usage};
use troupe_core::{AgentId, SubtaskId, TaskId};

use super::resume::DriverState;
use crate::orchestrator::Shared;
use crate::orchestrator::recorder::Notes;

/// Who took a step.
#[derive(Debug, Clone, Copy)]
pub(super) enum By<'a> {
    /// The orchestrator itself.
    Orchestrator,
    /// A worker (or another agent).
    Agent(&'a AgentId),
}

/// What a step is about.
#[derive(Debug, Clone, Copy)]
pub(super) enum About<'a> {
    /// The task as a whole.
    Task,
    /// One attempt at a subtask.
    Attempt(&'a SubtaskId, u32),
}

/// One step: who, about what, what happened, in words, and the tokens it cost.
pub(super) struct Step<'a> {
    pub(super) by: By<'a>,
    pub(super) about: About<'a>,
    pub(super) event: EventKind,
    pub(super) detail: String,
    pub(super) usage: Usage,
    pub(super) data: Option<StepData>,
}

impl<'a> Step<'a> {
    /// A step of the orchestrator's about the task.
    pub(super) fn task(event: EventKind, detail: impl Into<String>) -> Self {
        Self {
            by: By::Orchestrator,
            about: About::Task,
            event,
            detail: detail.into(),
            usage: Usage::default(),
            data: None,
        }
    }

    /// A step about one attempt at a subtask.
    pub(super) fn attempt(
        by: By<'a>,
        id: &'a SubtaskId,
        attempt: u32,
        event: EventKind,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            by,
            about: About::Attempt(id, attempt),
            event,
            detail: detail.into(),
            usage: Usage::default(),
            data: None,
        }
    }

    /// The same step, with what a program may need to know of it.
    pub(super) fn with_data(mut self, data: StepData) -> Self {
        self.data = Some(data);
        self
    }

    /// The same step, with the tokens it cost.
    pub(super) fn costing(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }
}

/// The writes of one task's driver.
pub(super) struct Journal {
    shared: Arc<Shared>,
    task: TaskId,
    /// The lease epoch the driver holds the task under (0: no lease).
    epoch: u64,
    /// The last progress step written.
    last_step: u64,
    /// Turns of the run loop (replies and timers handled) since the last checkpoint.
    turns: u32,
    /// Tokens the orchestrator spent not yet written to an entry.
    unrecorded: Usage,
}

impl Journal {
    pub(super) fn new(shared: Arc<Shared>, task: TaskId, epoch: u64, last_step: u64) -> Self {
        Self {
            shared,
            task,
            epoch,
            last_step,
            turns: 0,
            unrecorded: Usage::default(),
        }
    }

    /// The lease epoch held (0: none).
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The fencing token of every write, if the driver holds a lease.
    fn fence(&self) -> Option<u64> {
        (self.epoch > 0).then_some(self.epoch)
    }

    /// Where notes go while a long call runs (fenced like the rest).
    pub(super) fn notes(&self) -> Notes {
        self.shared.recorder.notes(self.task, self.fence())
    }

    /// Tokens the orchestrator spent itself: the next entry of its own carries them.
    pub(super) fn spent(&mut self, usage: Usage) {
        self.unrecorded += usage;
    }

    /// The progress entry of `step`, fenced; one of the orchestrator's own
    /// takes the tokens not yet recorded.
    fn entry(&mut self, step: Step<'_>) -> NewProgressEntry {
        let Step {
            by,
            about,
            event,
            detail,
            mut usage,
            data,
        } = step;
        let agent = match by {
            By::Orchestrator => {
                usage += std::mem::take(&mut self.unrecorded);
                &self.shared.agent
            }
            By::Agent(agent) => agent,
        };
        let entry = match about {
            About::Task => NewProgressEntry::task(self.task, agent, event, detail),
            About::Attempt(id, attempt) => {
                NewProgressEntry::subtask(self.task, agent, id, attempt, event, detail)
            }
        };
        let entry = entry.with_usage(usage).with_fence(self.fence());
        match data {
            Some(data) => entry.with_data(data),
            None => entry,
        }
    }

    fn saw(&mut self, step: u64) {
        self.last_step = self.last_step.max(step);
    }

    /// Writes `step` to the progress ledger.
    pub(super) async fn record(&mut self, step: Step<'_>) -> Result<(), StoreError> {
        let entry = self.entry(step);
        let stored = self.shared.recorder.record(entry).await?;
        self.saw(stored.step);
        Ok(())
    }

    /// Writes a subtask change and the step that tells of it at once. The
    /// entry is stored even when the store does not take the change (it
    /// disagreed with the ledger): the answer says whether it did.
    pub(super) async fn write_step(
        &mut self,
        id: &SubtaskId,
        change: &SubtaskChange,
        step: Step<'_>,
    ) -> Result<Applied, StoreError> {
        let entry = self.entry(step);
        let (applied, stored) = write_change(&self.shared, id, change, entry).await?;
        self.saw(stored);
        Ok(applied)
    }

    /// [`write_step`](Self::write_step) for many subtasks at once (they
    /// share commits); true if the store refused any change.
    pub(super) async fn write_steps<'s>(
        &mut self,
        steps: impl IntoIterator<Item = (&'s SubtaskId, &'s SubtaskChange, Step<'s>, tracing::Span)>,
    ) -> Result<bool, StoreError> {
        use tracing::Instrument as _;
        let entries: Vec<_> = steps
            .into_iter()
            .map(|(id, change, step, span)| (id, change, self.entry(step), span))
            .collect();
        let shared = &self.shared;
        let writes = entries.into_iter().map(|(id, change, entry, span)| {
            write_change(shared, id, change, entry).instrument(span)
        });
        let mut diverged = false;
        for written in join_all(writes).await {
            let (applied, stored) = written?;
            self.last_step = self.last_step.max(stored);
            diverged |= applied == Applied::Unchanged;
        }
        Ok(diverged)
    }

    /// Sets the task's status with its usage so far, checkpoints `state`,
    /// and writes `note` (an orchestrator's step): the three at once, so the
    /// task waits for one commit, not three.
    pub(super) async fn set_status(
        &mut self,
        status: TaskStatus,
        usage: Usage,
        state: &DriverState,
        note: Option<Step<'_>>,
    ) -> Result<(), StoreError> {
        let update = TaskUpdate {
            usage: Some(usage),
            fence: self.fence(),
            ..TaskUpdate::status(status)
        };
        let entry = note.map(|step| self.entry(step));
        let checkpoint = self.take_checkpoint(state)?;
        let shared = &self.shared;
        let (_, (), recorded) = tokio::try_join!(
            shared.stores.tasks.update_task(self.task, &update),
            save(shared, checkpoint.as_ref()),
            async {
                match entry {
                    Some(entry) => shared.recorder.record(entry).await.map(Some),
                    None => Ok(None),
                }
            }
        )?;
        if let Some(recorded) = recorded {
            self.saw(recorded.step);
        }
        Ok(())
    }

    /// Counts a turn of the run loop (a reply or a timer handled); true
    /// when a checkpoint is due (every `coordinator.checkpoint_every` turns).
    pub(super) fn turn_done(&mut self) -> bool {
        self.turns += 1;
        self.turns >= self.shared.config.coordinator.checkpoint_every
    }

    /// Checkpoints the driver's `state` now (counting turns afresh).
    pub(super) async fn checkpoint(&mut self, state: &DriverState) -> Result<(), StoreError> {
        let checkpoint = self.take_checkpoint(state)?;
        save(&self.shared, checkpoint.as_ref()).await
    }

    /// The checkpoint of `state` now, if the driver holds a lease (and so has
    /// an epoch to save it under); counting restarts from here.
    fn take_checkpoint(&mut self, state: &DriverState) -> Result<Option<Checkpoint>, StoreError> {
        self.turns = 0;
        if self.epoch == 0 {
            return Ok(None);
        }
        let state = serde_json::to_value(state)
            .map_err(|e| StoreError::Backend(format!("checkpoint: {e}")))?;
        Ok(Some(Checkpoint {
            task: self.task,
            epoch: self.epoch,
            step: self.last_step,
            state,
            at: troupe_core::time::now(),
        }))
    }

    /// Stores the task's end: the subtasks it leaves open cancelled, its
    /// status, answer or reason and usage, and the step that tells of it.
    /// The end and its step go at once: both are fenced, so if another
    /// coordinator has the task neither is stored.
    pub(super) async fn finish(
        &mut self,
        cancelled: &[SubtaskId],
        update: TaskUpdate,
        step: Step<'_>,
    ) -> Result<(), StoreError> {
        let fence = self.fence();
        let entry = self.entry(step);
        let tasks = &self.shared.stores.tasks;
        let task = self.task;
        for written in join_all(
            cancelled
                .iter()
                .map(|id| tasks.update_subtask(task, id, &SubtaskChange::Cancelled, fence)),
        )
        .await
        {
            written?;
        }
        let update = TaskUpdate { fence, ..update };
        let (_, stored) = tokio::try_join!(
            tasks.update_task(task, &update),
            self.shared.recorder.record(entry)
        )?;
        self.saw(stored.step);
        Ok(())
    }

    /// Gives the lease back when the process stops, so that another
    /// coordinator can take the task at once rather than after the lease lapses.
    pub(super) async fn release(&self) {
        if self.epoch == 0 {
            return;
        }
        let leases = &self.shared.stores.leases;
        if let Err(e) = leases
            .release(self.task, &self.shared.agent, self.epoch)
            .await
        {
            tracing::warn!(error = %e, "could not give the task's lease back; it lapses by itself");
        }
    }
}

/// Writes a subtask change and its entry at once; the entry's step.
async fn write_change(
    shared: &Shared,
    id: &SubtaskId,
    change: &SubtaskChange,
    entry: NewProgressEntry,
) -> Result<(Applied, u64), StoreError> {
    let (task, fence) = (entry.task_id, entry.fence);
    let (applied, stored) = tokio::try_join!(
        shared.stores.tasks.update_subtask(task, id, change, fence),
        shared.recorder.record(entry)
    )?;
    Ok((applied, stored.step))
}

/// Saves `checkpoint`, if there is one (a driver without a lease has none).
async fn save(shared: &Shared, checkpoint: Option<&Checkpoint>) -> Result<(), StoreError> {
    match checkpoint {
        Some(checkpoint) => shared.stores.checkpoints.save_checkpoint(checkpoint).await,
        None => Ok(()),
    }
}
