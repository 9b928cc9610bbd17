//! Leases, checkpoints and take-over: what lets another coordinator finish a
//! task whose coordinator died.
//!
//! A driver writes its task's status changes, subtask changes and progress
//! entries under its lease epoch (the store refuses them once another
//! coordinator has taken the task), and
//! checkpoints its own state (stall and re-plan counters, the request id,
//! the tokens spent) at every status change and every
//! `coordinator.checkpoint_every` steps. A driver started by a take-over
//! reads the task ledger and the newest checkpoint, dispatches again every
//! attempt that was in flight (its reply went to the dead coordinator), and
//! carries on; a task that had no plan yet is planned from the start.

use serde::{Deserialize, Serialize};
use troupe_core::SubtaskId;
use troupe_core::ledger::{EventKind, SubtaskChange};
use troupe_core::store::Checkpoint;
use troupe_core::task::{TaskRecord, Usage};

use super::journal::{By, Step};
use super::{Driver, End};

/// The driver's own state, as a checkpoint keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(in crate::orchestrator) struct DriverState {
    /// The request the task came from.
    pub(in crate::orchestrator) request_id: String,
    /// Failures since the last completion.
    pub(in crate::orchestrator) stalls: u32,
    /// Re-plans made.
    pub(in crate::orchestrator) replans: u32,
    /// Tokens spent on the task by every agent, as the driver counted them.
    pub(in crate::orchestrator) usage: Usage,
}

impl DriverState {
    /// The state in `checkpoint`, if it is readable; a checkpoint this
    /// version cannot read is logged and ignored (the task ledger suffices).
    pub(in crate::orchestrator) fn from_checkpoint(checkpoint: &Checkpoint) -> Option<Self> {
        match serde_json::from_value(checkpoint.state.clone()) {
            Ok(state) => Some(state),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable checkpoint ignored");
                None
            }
        }
    }
}

impl Driver {
    /// Whether the task has a plan to carry on with (else it is planned anew).
    pub(super) fn has_plan(&self) -> bool {
        self.ledger.current().next().is_some()
    }

    /// Takes over the task: every attempt in flight is failed for a retry
    /// (its reply went to the coordinator that died) without counting as a
    /// stall, and the take-over is recorded.
    pub(super) async fn take_over(&mut self, from_step: u64) -> Result<(), End> {
        let in_flight: Vec<(SubtaskId, u32)> = self
            .ledger
            .current()
            .filter(|s| s.status.is_in_flight())
            .map(|s| (s.id.clone(), s.attempts))
            .collect();
        let detail = format!(
            "resumed by {} (lease epoch {}) from the checkpoint at step {from_step}; {} attempt(s) in flight dispatched again",
            self.shared.agent,
            self.journal.epoch(),
            in_flight.len()
        );
        self.journal
            .record(Step::task(EventKind::TaskResumed, detail))
            .await?;
        for (id, attempt) in in_flight {
            let change = SubtaskChange::AttemptFailed {
                attempt,
                error: "its coordinator stopped while it was in flight".into(),
                retry: true,
            };
            let step = Step::attempt(
                By::Orchestrator,
                &id,
                attempt,
                EventKind::AttemptFailed,
                "its coordinator stopped while it was in flight; dispatching it again",
            );
            self.apply_recorded(&id, &change, step).await?;
        }
        Ok(())
    }
}

/// The record a resumed driver starts from: the store's, with the usage the
/// checkpoint counted when it is more (usage reaches the store only at status
/// changes).
pub(in crate::orchestrator) fn resumed_record(
    mut record: TaskRecord,
    state: Option<&DriverState>,
) -> TaskRecord {
    if let Some(state) = state
        && state.usage.total() > record.usage.total()
    {
        record.usage = state.usage;
    }
    record
}
