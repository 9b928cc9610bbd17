//! Tasks and subtasks as they are stored: the task ledger's records.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, SubtaskId, TaskId};
use crate::role::Role;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Accepted and stored; no work has started.
    Pending,
    /// The orchestrator is asking the LLM for a plan.
    Planning,
    /// Subtasks are being worked on.
    Running,
    /// The final answer is stored.
    Completed,
    /// The task ended without an answer; the reason is stored.
    Failed,
    /// Someone cancelled the task.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in life order.
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Pending,
        TaskStatus::Planning,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// The status's name, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Planning => "planning",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the task has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

/// Where a subtask is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubtaskStatus {
    /// Waiting for its dependencies, or for its next attempt.
    Pending,
    /// Published to its role's topic; no worker has said it started.
    Dispatched,
    /// A worker is on it.
    Running,
    /// Its result is stored.
    Completed,
    /// It failed for good (attempts used up, or a permanent error).
    Failed,
    /// A later plan replaced it.
    Superseded,
    /// The task ended before it could run.
    Cancelled,
}

impl SubtaskStatus {
    /// Every status.
    pub const ALL: [SubtaskStatus; 7] = [
        SubtaskStatus::Pending,
        SubtaskStatus::Dispatched,
        SubtaskStatus::Running,
        SubtaskStatus::Completed,
        SubtaskStatus::Failed,
        SubtaskStatus::Superseded,
        SubtaskStatus::Cancelled,
    ];

    /// The status's name, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            SubtaskStatus::Pending => "pending",
            SubtaskStatus::Dispatched => "dispatched",
            SubtaskStatus::Running => "running",
            SubtaskStatus::Completed => "completed",
            SubtaskStatus::Failed => "failed",
            SubtaskStatus::Superseded => "superseded",
            SubtaskStatus::Cancelled => "cancelled",
        }
    }

    /// Whether a worker may be on it now.
    pub fn is_in_flight(self) -> bool {
        matches!(self, SubtaskStatus::Dispatched | SubtaskStatus::Running)
    }

    /// Whether it has ended and will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SubtaskStatus::Completed
                | SubtaskStatus::Failed
                | SubtaskStatus::Superseded
                | SubtaskStatus::Cancelled
        )
    }
}

crate::named::named_enum!(TaskStatus, SubtaskStatus);

/// A status name that is not one of ours (a corrupt row, a newer version's data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(String);

impl UnknownStatus {
    pub(crate) fn new(value: &str) -> Self {
        Self(value.chars().take(40).collect())
    }
}

/// LLM token usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens sent to the model.
    pub prompt_tokens: u64,
    /// Tokens the model produced.
    pub completion_tokens: u64,
}

impl Usage {
    /// Both counts added up.
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Self) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(rhs.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(rhs.completion_tokens);
    }
}

/// One subtask as the task ledger holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskRecord {
    /// Its id within the task.
    pub id: SubtaskId,
    /// Which plan revision it belongs to (0 for the first plan).
    pub revision: u32,
    /// Which role works on it.
    pub role: Role,
    /// A short title.
    pub title: String,
    /// What the worker must do.
    pub instruction: String,
    /// The subtasks whose results it needs.
    pub depends_on: Vec<SubtaskId>,
    /// Where it is.
    pub status: SubtaskStatus,
    /// How many attempts were dispatched so far.
    pub attempts: u32,
    /// The worker's output, once completed.
    pub result: Option<String>,
    /// The last error, if an attempt failed.
    pub last_error: Option<String>,
    /// The worker that last took it.
    pub agent: Option<AgentId>,
}

/// A task with its whole task ledger: facts, plan, subtasks and outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Its id.
    pub id: TaskId,
    /// The goal as the user gave it.
    pub goal: String,
    /// Where it is.
    pub status: TaskStatus,
    /// The final answer, once completed.
    pub result: Option<String>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// What the orchestrator knows: given or derived facts, and lessons from failures.
    pub facts: Vec<String>,
    /// How many times the task was re-planned.
    pub plan_revision: u32,
    /// Every subtask of every plan revision, in plan order.
    pub subtasks: Vec<SubtaskRecord>,
    /// LLM tokens spent on the task by every agent.
    pub usage: Usage,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

impl TaskRecord {
    /// A new pending task.
    pub fn new(id: TaskId, goal: impl Into<String>, now: DateTime<Utc>) -> Self {
        Self {
            id,
            goal: goal.into(),
            status: TaskStatus::Pending,
            result: None,
            error: None,
            facts: Vec::new(),
            plan_revision: 0,
            subtasks: Vec::new(),
            usage: Usage::default(),
            created_at: now,
            updated_at: now,
            finished_at: None,
        }
    }

    /// The subtask with this id.
    pub fn subtask(&self, id: &SubtaskId) -> Option<&SubtaskRecord> {
        self.subtasks.iter().find(|s| &s.id == id)
    }

    /// Milliseconds from submission to the end (or to the last change, while running).
    pub fn elapsed_ms(&self) -> u64 {
        let end = self.finished_at.unwrap_or(self.updated_at);
        u64::try_from((end - self.created_at).num_milliseconds()).unwrap_or(0)
    }

    /// The document `troupe run --json` prints and the HTTP API returns.
    pub fn document(&self, elapsed_ms: u64) -> TaskDocument {
        TaskDocument {
            task_id: self.id,
            status: self.status,
            result: self.result.clone(),
            subtasks: self
                .subtasks
                .iter()
                .map(|s| SubtaskDocument {
                    id: s.id.clone(),
                    role: s.role.clone(),
                    status: s.status,
                    attempts: s.attempts,
                    result: s.result.clone(),
                })
                .collect(),
            usage: self.usage,
            elapsed_ms,
        }
    }
}

/// A task's outcome as users and scripts see it (`troupe run --json`, `GET /v1/tasks/{id}`).
///
/// The field names are a fixed interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDocument {
    /// The task's id.
    pub task_id: TaskId,
    /// Its status.
    pub status: TaskStatus,
    /// The final answer, or null.
    pub result: Option<String>,
    /// Every subtask.
    pub subtasks: Vec<SubtaskDocument>,
    /// Tokens spent.
    pub usage: Usage,
    /// Milliseconds from submission to the end.
    pub elapsed_ms: u64,
}

/// One subtask in a [`TaskDocument`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskDocument {
    /// Its id.
    pub id: SubtaskId,
    /// Its role.
    pub role: Role,
    /// Its status.
    pub status: SubtaskStatus,
    /// Attempts dispatched.
    pub attempts: u32,
    /// Its result, or null.
    pub result: Option<String>,
}

/// One line of a task listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// The task's id.
    pub id: TaskId,
    /// Its goal.
    pub goal: String,
    /// Its status.
    pub status: TaskStatus,
    /// Subtasks of the current plan.
    pub subtasks_total: u32,
    /// Of those, how many are completed.
    pub subtasks_completed: u32,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in SubtaskStatus::ALL {
            assert_eq!(s.as_str().parse::<SubtaskStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("done".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn usage_adds_without_overflow() {
        let mut u = Usage {
            prompt_tokens: u64::MAX,
            completion_tokens: 1,
        };
        u += Usage {
            prompt_tokens: 5,
            completion_tokens: 2,
        };
        assert_eq!(u.prompt_tokens, u64::MAX);
        assert_eq!(u.completion_tokens, 3);
    }
}
