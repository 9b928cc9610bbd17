//! [`Ledgers`]: both ledgers of one task as one document, the shape of
//! `troupe tasks show --json` and `GET /v1/tasks/{id}/ledger`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::progress::{ProgressEntry, usage_by_agent};
use crate::ids::AgentId;
use crate::task::{TaskRecord, Usage};

/// A task's task ledger and progress ledger. The field names are a fixed interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledgers {
    /// The task ledger: goal, facts, plan, subtasks, status.
    pub task_ledger: TaskRecord,
    /// Every step, oldest first.
    pub progress_ledger: Vec<ProgressEntry>,
    /// Tokens per agent, summed from the progress ledger.
    pub usage_by_agent: BTreeMap<AgentId, Usage>,
}

impl Ledgers {
    /// The document for `task` and its whole progress ledger.
    pub fn new(task: TaskRecord, progress: Vec<ProgressEntry>) -> Self {
        Self {
            usage_by_agent: usage_by_agent(&progress),
            task_ledger: task,
            progress_ledger: progress,
        }
    }
}
