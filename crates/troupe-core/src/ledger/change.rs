//! Guarded transitions of one subtask.
//!
//! Every message that changes a subtask names the attempt it belongs to. A
//! change applies only when the subtask is in the state the change expects and
//! on that attempt; otherwise it is a duplicate or a stale message (an attempt
//! that already timed out, a plan that was replaced) and nothing changes. The
//! attempt number is the fencing token: a worker presumed dead cannot overwrite
//! its successor's result.

use serde::{Deserialize, Serialize};

use crate::ids::AgentId;
use crate::task::{SubtaskRecord, SubtaskStatus};

/// One transition of a subtask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum SubtaskChange {
    /// Attempt `attempt` was published. Applies to a pending subtask whose last
    /// attempt is `attempt - 1`.
    Dispatched {
        /// The new attempt number (1 for the first).
        attempt: u32,
    },
    /// A worker started attempt `attempt`. Applies to a dispatched subtask on that attempt.
    Started {
        /// The attempt.
        attempt: u32,
        /// The worker.
        agent: AgentId,
    },
    /// Attempt `attempt` produced a result. Applies while the attempt is in flight.
    Completed {
        /// The attempt.
        attempt: u32,
        /// The worker.
        agent: AgentId,
        /// Its output.
        result: String,
    },
    /// Attempt `attempt` failed or timed out. Applies while the attempt is in
    /// flight. With `retry` the subtask goes back to pending for another
    /// attempt; without, it fails for good.
    AttemptFailed {
        /// The attempt.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// Whether another attempt follows.
        retry: bool,
    },
    /// A new plan replaced the subtask. Applies unless it has ended.
    Superseded,
    /// The task ended before the subtask could. Applies unless it has ended.
    Cancelled,
}

/// Whether a change was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// The subtask changed.
    Changed,
    /// The guard did not hold: a duplicate or stale change; nothing changed.
    Unchanged,
}

impl Applied {
    /// Whether the subtask changed.
    pub fn changed(self) -> bool {
        self == Applied::Changed
    }
}

impl SubtaskChange {
    /// The status a subtask must have, and the attempt count it must show, for
    /// this change to apply. `None` for the attempt means any; an empty status
    /// list means the change never applies (a dispatch of attempt 0).
    pub fn guard(&self) -> (&'static [SubtaskStatus], Option<u32>) {
        const PENDING: &[SubtaskStatus] = &[SubtaskStatus::Pending];
        const DISPATCHED: &[SubtaskStatus] = &[SubtaskStatus::Dispatched];
        const IN_FLIGHT: &[SubtaskStatus] = &[SubtaskStatus::Dispatched, SubtaskStatus::Running];
        const OPEN: &[SubtaskStatus] = &[
            SubtaskStatus::Pending,
            SubtaskStatus::Dispatched,
            SubtaskStatus::Running,
        ];
        match self {
            SubtaskChange::Dispatched { attempt: 0 } => (&[], None),
            SubtaskChange::Dispatched { attempt } => (PENDING, Some(attempt - 1)),
            SubtaskChange::Started { attempt, .. } => (DISPATCHED, Some(*attempt)),
            SubtaskChange::Completed { attempt, .. }
            | SubtaskChange::AttemptFailed { attempt, .. } => (IN_FLIGHT, Some(*attempt)),
            SubtaskChange::Superseded | SubtaskChange::Cancelled => (OPEN, None),
        }
    }

    /// Whether the change applies to `subtask` as it is.
    pub fn applies_to(&self, subtask: &SubtaskRecord) -> bool {
        let (statuses, attempts) = self.guard();
        statuses.contains(&subtask.status) && attempts.is_none_or(|a| a == subtask.attempts)
    }

    /// The status the subtask has after the change.
    pub fn next_status(&self) -> SubtaskStatus {
        match self {
            SubtaskChange::Dispatched { .. } => SubtaskStatus::Dispatched,
            SubtaskChange::Started { .. } => SubtaskStatus::Running,
            SubtaskChange::Completed { .. } => SubtaskStatus::Completed,
            SubtaskChange::AttemptFailed { retry: true, .. } => SubtaskStatus::Pending,
            SubtaskChange::AttemptFailed { retry: false, .. } => SubtaskStatus::Failed,
            SubtaskChange::Superseded => SubtaskStatus::Superseded,
            SubtaskChange::Cancelled => SubtaskStatus::Cancelled,
        }
    }

    /// What the change writes besides the status; what it leaves is `None`.
    /// A store that applies changes itself (one SQL `UPDATE` guarded by
    /// [`SubtaskChange::guard`]) writes exactly these, as [`SubtaskChange::apply`] does.
    pub fn fields(&self) -> ChangeFields<'_> {
        let none = ChangeFields::default();
        match self {
            SubtaskChange::Dispatched { attempt } => ChangeFields {
                attempts: Some(*attempt),
                ..none
            },
            SubtaskChange::Started { agent, .. } => ChangeFields {
                agent: Some(agent),
                ..none
            },
            SubtaskChange::Completed { agent, result, .. } => ChangeFields {
                agent: Some(agent),
                result: Some(result),
                ..none
            },
            SubtaskChange::AttemptFailed { error, .. } => ChangeFields {
                last_error: Some(error),
                ..none
            },
            SubtaskChange::Superseded | SubtaskChange::Cancelled => none,
        }
    }

    /// Applies the change if its guard holds.
    pub fn apply(&self, subtask: &mut SubtaskRecord) -> Applied {
        if !self.applies_to(subtask) {
            return Applied::Unchanged;
        }
        subtask.status = self.next_status();
        let fields = self.fields();
        if let Some(attempts) = fields.attempts {
            subtask.attempts = attempts;
        }
        if let Some(agent) = fields.agent {
            subtask.agent = Some(agent.clone());
        }
        if let Some(result) = fields.result {
            subtask.result = Some(result.to_owned());
        }
        if let Some(error) = fields.last_error {
            subtask.last_error = Some(error.to_owned());
        }
        Applied::Changed
    }
}

/// The fields of a subtask a [`SubtaskChange`] sets besides its status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeFields<'a> {
    /// The new attempt count.
    pub attempts: Option<u32>,
    /// The worker now holding or having finished the attempt.
    pub agent: Option<&'a AgentId>,
    /// The attempt's output.
    pub result: Option<&'a str>,
    /// Why the attempt failed.
    pub last_error: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SubtaskId;
    use crate::role::Role;

    fn subtask() -> SubtaskRecord {
        SubtaskRecord {
            id: SubtaskId::new("s1").unwrap(),
            revision: 0,
            role: Role::new("writer").unwrap(),
            title: String::new(),
            instruction: "write".into(),
            depends_on: vec![],
            status: SubtaskStatus::Pending,
            attempts: 0,
            result: None,
            last_error: None,
            agent: None,
        }
    }

    fn agent() -> AgentId {
        AgentId::new("writer-1").unwrap()
    }

    #[test]
    fn a_result_applies_once() {
        let mut s = subtask();
        assert!(
            SubtaskChange::Dispatched { attempt: 1 }
                .apply(&mut s)
                .changed()
        );
        let done = SubtaskChange::Completed {
            attempt: 1,
            agent: agent(),
            result: "ok".into(),
        };
        assert!(done.apply(&mut s).changed());
        let before = s.clone();
        assert_eq!(done.apply(&mut s), Applied::Unchanged);
        assert_eq!(s, before);
    }

    #[test]
    fn a_stale_attempt_is_ignored() {
        let mut s = subtask();
        SubtaskChange::Dispatched { attempt: 1 }.apply(&mut s);
        let failed = SubtaskChange::AttemptFailed {
            attempt: 1,
            error: "timeout".into(),
            retry: true,
        };
        assert!(failed.apply(&mut s).changed());
        assert_eq!(s.status, SubtaskStatus::Pending);
        assert!(
            SubtaskChange::Dispatched { attempt: 2 }
                .apply(&mut s)
                .changed()
        );
        let late = SubtaskChange::Completed {
            attempt: 1,
            agent: agent(),
            result: "late".into(),
        };
        assert_eq!(late.apply(&mut s), Applied::Unchanged);
        assert_eq!(s.result, None);
        assert_eq!(s.attempts, 2);
    }

    #[test]
    fn dispatch_needs_the_next_attempt_number() {
        let mut s = subtask();
        assert_eq!(
            SubtaskChange::Dispatched { attempt: 0 }.apply(&mut s),
            Applied::Unchanged
        );
        assert_eq!(
            SubtaskChange::Dispatched { attempt: 2 }.apply(&mut s),
            Applied::Unchanged
        );
        assert!(
            SubtaskChange::Dispatched { attempt: 1 }
                .apply(&mut s)
                .changed()
        );
        assert_eq!(
            SubtaskChange::Dispatched { attempt: 1 }.apply(&mut s),
            Applied::Unchanged
        );
    }

    #[test]
    fn terminal_subtasks_do_not_move() {
        let mut s = subtask();
        SubtaskChange::Dispatched { attempt: 1 }.apply(&mut s);
        SubtaskChange::AttemptFailed {
            attempt: 1,
            error: "bad".into(),
            retry: false,
        }
        .apply(&mut s);
        assert_eq!(s.status, SubtaskStatus::Failed);
        assert_eq!(SubtaskChange::Superseded.apply(&mut s), Applied::Unchanged);
        assert_eq!(SubtaskChange::Cancelled.apply(&mut s), Applied::Unchanged);
    }
}
