//! Progress ledger entries.

use chrono::{DateTime, Utc};

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, SubtaskId, TaskId};
use crate::role::Role;
use crate::task::Usage;

/// The longest `detail` kept in a progress entry; longer text is clipped.
pub const MAX_DETAIL_CHARS: usize = 2_000;

/// What happened at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The task was accepted.
    TaskSubmitted,
    /// The orchestrator asked the LLM for a plan.
    PlanningStarted,
    /// The LLM's plan was rejected; the detail lists why.
    PlanRejected,
    /// A plan was accepted.
    PlanAccepted,
    /// A subtask was published to its role.
    SubtaskDispatched,
    /// A worker started a subtask.
    SubtaskStarted,
    /// A worker reported progress.
    SubtaskProgress,
    /// A subtask's result was stored.
    SubtaskCompleted,
    /// An attempt failed or timed out; another attempt follows.
    AttemptFailed,
    /// A subtask failed for good.
    SubtaskFailed,
    /// An LLM call of the orchestrator failed (and may be retried).
    LlmError,
    /// The run made no progress for too long.
    Stalled,
    /// The LLM judged a stuck run; the detail says its decision and why.
    ProgressEvaluated,
    /// The LLM's progress evaluation was rejected; the detail lists why.
    EvaluationRejected,
    /// The orchestrator is re-planning with what it learned.
    Replanning,
    /// The orchestrator is writing the final answer.
    SynthesisStarted,
    /// The final answer is stored.
    TaskCompleted,
    /// The task failed.
    TaskFailed,
    /// The task was cancelled.
    TaskCancelled,
    /// A coordinator took the task over (its own died or stopped) and resumed it.
    TaskResumed,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 20] = [
        EventKind::TaskSubmitted,
        EventKind::PlanningStarted,
        EventKind::PlanRejected,
        EventKind::PlanAccepted,
        EventKind::SubtaskDispatched,
        EventKind::SubtaskStarted,
        EventKind::SubtaskProgress,
        EventKind::SubtaskCompleted,
        EventKind::AttemptFailed,
        EventKind::SubtaskFailed,
        EventKind::LlmError,
        EventKind::Stalled,
        EventKind::ProgressEvaluated,
        EventKind::EvaluationRejected,
        EventKind::Replanning,
        EventKind::SynthesisStarted,
        EventKind::TaskCompleted,
        EventKind::TaskFailed,
        EventKind::TaskCancelled,
        EventKind::TaskResumed,
    ];

    /// The kind's name, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TaskSubmitted => "task_submitted",
            EventKind::PlanningStarted => "planning_started",
            EventKind::PlanRejected => "plan_rejected",
            EventKind::PlanAccepted => "plan_accepted",
            EventKind::SubtaskDispatched => "subtask_dispatched",
            EventKind::SubtaskStarted => "subtask_started",
            EventKind::SubtaskProgress => "subtask_progress",
            EventKind::SubtaskCompleted => "subtask_completed",
            EventKind::AttemptFailed => "attempt_failed",
            EventKind::SubtaskFailed => "subtask_failed",
            EventKind::LlmError => "llm_error",
            EventKind::Stalled => "stalled",
            EventKind::ProgressEvaluated => "progress_evaluated",
            EventKind::EvaluationRejected => "evaluation_rejected",
            EventKind::Replanning => "replanning",
            EventKind::SynthesisStarted => "synthesis_started",
            EventKind::TaskCompleted => "task_completed",
            EventKind::TaskFailed => "task_failed",
            EventKind::TaskCancelled => "task_cancelled",
            EventKind::TaskResumed => "task_resumed",
        }
    }
}

crate::named::named_enum!(EventKind);

/// What a program may need to know of a step, beyond its `detail` (which
/// is for people): the plan a `plan_accepted` step installed, say.
///
/// ```
/// use troupe_core::ledger::StepData;
///
/// let json = r#"{"kind":"plan","revision":0,"subtasks":[{"id":"s1","role":"writer","title":"Draft"}]}"#;
/// let data: StepData = serde_json::from_str(json).unwrap();
/// let StepData::Plan { subtasks, .. } = &data else { unreachable!() };
/// assert_eq!(subtasks[0].role.as_str(), "writer");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepData {
    /// The plan a `plan_accepted` step installed.
    Plan {
        /// Its revision (0 for the first plan).
        revision: u32,
        /// Its subtasks, in plan order (their instructions are in the task ledger).
        subtasks: Vec<PlannedSubtask>,
    },
}

/// A subtask as a plan names it: enough to draw the plan and follow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedSubtask {
    /// Its id.
    pub id: SubtaskId,
    /// The role that does it.
    pub role: Role,
    /// Its title.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// The subtasks whose results it needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<SubtaskId>,
}

/// One step in the progress ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressEntry {
    /// The task.
    pub task_id: TaskId,
    /// The step number within the task, from 1, gap-free and increasing.
    pub step: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who did it.
    pub agent: AgentId,
    /// For which subtask, if any.
    pub subtask_id: Option<SubtaskId>,
    /// For which attempt, if any.
    pub attempt: Option<u32>,
    /// What happened.
    pub event: EventKind,
    /// What came of it, in words (clipped to [`MAX_DETAIL_CHARS`]).
    pub detail: String,
    /// The LLM tokens this step spent, if it made LLM calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What a program may need to know of the step, where there is more than
    /// its detail (see [`StepData`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<StepData>,
}

impl ProgressEntry {
    /// Whether this is a task's last step: it ended, completed or not.
    pub fn ends_task(&self) -> bool {
        matches!(
            self.event,
            EventKind::TaskCompleted | EventKind::TaskFailed | EventKind::TaskCancelled
        )
    }
}

/// A progress entry before the store gives it a step number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewProgressEntry {
    /// The task.
    pub task_id: TaskId,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who did it.
    pub agent: AgentId,
    /// For which subtask, if any.
    pub subtask_id: Option<SubtaskId>,
    /// For which attempt, if any.
    pub attempt: Option<u32>,
    /// What happened.
    pub event: EventKind,
    /// What came of it.
    pub detail: String,
    /// The LLM tokens this step spent, if it made LLM calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What a program may need to know of the step (see [`StepData`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<StepData>,
    /// The lease epoch the writer holds the task under, if it holds a lease:
    /// the store refuses the entry ([`StoreError::Fenced`](crate::store::StoreError::Fenced))
    /// once the task's epoch has moved on, so a coordinator that lost the
    /// task cannot add to its ledger. Not part of the stored entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
}

impl NewProgressEntry {
    /// An entry about the task as a whole, stamped now.
    pub fn task(
        task_id: TaskId,
        agent: &AgentId,
        event: EventKind,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            task_id,
            at: crate::time::now(),
            agent: agent.clone(),
            subtask_id: None,
            attempt: None,
            event,
            detail: clip(detail.into()),
            usage: None,
            data: None,
            fence: None,
        }
    }

    /// The same entry, with what a program may need to know of it.
    pub fn with_data(mut self, data: StepData) -> Self {
        self.data = Some(data);
        self
    }

    /// The same entry, fenced with a lease epoch (see [`fence`](Self::fence)).
    pub fn with_fence(mut self, fence: Option<u64>) -> Self {
        self.fence = fence;
        self
    }

    /// The same entry, with the tokens its step spent (none recorded when zero).
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = (usage.total() > 0).then_some(usage);
        self
    }

    /// An entry about one attempt at a subtask, stamped now.
    pub fn subtask(
        task_id: TaskId,
        agent: &AgentId,
        subtask_id: &SubtaskId,
        attempt: u32,
        event: EventKind,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            subtask_id: Some(subtask_id.clone()),
            attempt: Some(attempt),
            ..Self::task(task_id, agent, event, detail)
        }
    }

    /// The stored entry with its step number.
    pub fn with_step(self, step: u64) -> ProgressEntry {
        ProgressEntry {
            task_id: self.task_id,
            step,
            at: self.at,
            agent: self.agent,
            subtask_id: self.subtask_id,
            attempt: self.attempt,
            event: self.event,
            detail: self.detail,
            usage: self.usage,
            data: self.data,
        }
    }
}

/// Tokens spent per agent, summed over the entries that carry usage: who
/// spent what on a task (the orchestrator's planning and synthesis, each
/// worker's subtasks), in agent order.
pub fn usage_by_agent<'a>(
    entries: impl IntoIterator<Item = &'a ProgressEntry>,
) -> std::collections::BTreeMap<AgentId, Usage> {
    let mut sums = std::collections::BTreeMap::new();
    for e in entries {
        if let Some(u) = e.usage {
            *sums.entry(e.agent.clone()).or_insert_with(Usage::default) += u;
        }
    }
    sums
}

/// Clips `text` to [`MAX_DETAIL_CHARS`] characters, marking the cut.
pub fn clip(text: String) -> String {
    if text.chars().count() <= MAX_DETAIL_CHARS {
        return text;
    }
    let mut out: String = text.chars().take(MAX_DETAIL_CHARS - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert!("nope".parse::<EventKind>().is_err());
    }

    #[test]
    fn details_are_clipped() {
        let long = "x".repeat(MAX_DETAIL_CHARS + 10);
        let clipped = clip(long);
        assert_eq!(clipped.chars().count(), MAX_DETAIL_CHARS);
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("short".into()), "short");
    }
}
