//! The two ledgers of Magentic-One, as data.
//!
//! - The **task ledger** is a [`TaskRecord`](crate::task::TaskRecord): facts, the
//!   plan and the status of every subtask. [`TaskLedger`] is its state machine;
//!   [`SubtaskChange`] is one guarded transition, applied the same way by the
//!   orchestrator's in-memory copy and by every store, so a duplicate or stale
//!   message changes nothing anywhere.
//! - The **progress ledger** is an append-only list of [`ProgressEntry`]: every
//!   step, which agent took it, for which subtask, what came of it.

mod change;
mod document;
mod progress;
mod state;

pub use change::{Applied, ChangeFields, SubtaskChange};
pub use document::Ledgers;
pub use progress::{
    EventKind, MAX_DETAIL_CHARS, NewProgressEntry, PlannedSubtask, ProgressEntry, StepData, clip,
    usage_by_agent,
};
pub use state::{LedgerError, TaskLedger};
