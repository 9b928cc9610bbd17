//! [`TaskLedger`]: the task ledger as a state machine over a [`TaskRecord`].

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::ids::{SubtaskId, TaskId};
use crate::ledger::change::{Applied, SubtaskChange};
use crate::plan::Plan;
use crate::task::{SubtaskRecord, SubtaskStatus, TaskRecord, TaskStatus, Usage};

/// A change that does not fit the ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// No subtask has this id.
    #[error("task has no subtask {0}")]
    UnknownSubtask(SubtaskId),
}

/// The task ledger of one task, with the rules of how it may change.
///
/// The orchestrator keeps one per running task and writes every change it
/// makes through to the store, which applies the same [`SubtaskChange`] guards.
///
/// ```
/// use troupe_core::ledger::{SubtaskChange, TaskLedger};
/// use troupe_core::plan::{Plan, PlanSubtask};
/// use troupe_core::task::TaskRecord;
/// use troupe_core::{AgentId, Role, SubtaskId, TaskId};
///
/// let mut ledger = TaskLedger::new(TaskRecord::new(TaskId::new(), "greet", chrono::Utc::now()));
/// let step = |id: &str, deps: &[&str]| PlanSubtask {
///     id: SubtaskId::new(id).unwrap(),
///     role: Role::new("writer").unwrap(),
///     title: String::new(),
///     instruction: format!("do {id}"),
///     depends_on: deps.iter().map(|d| SubtaskId::new(*d).unwrap()).collect(),
/// };
/// ledger.install_plan(&Plan { facts: vec![], subtasks: vec![step("a", &[]), step("b", &["a"])] });
/// let a = SubtaskId::new("a").unwrap();
/// assert_eq!(ledger.ready(), vec![a.clone()]);
///
/// ledger.apply(&a, &SubtaskChange::Dispatched { attempt: 1 }).unwrap();
/// let done = SubtaskChange::Completed {
///     attempt: 1,
///     agent: AgentId::new("writer-1").unwrap(),
///     result: "hello".into(),
/// };
/// assert!(ledger.apply(&a, &done).unwrap().changed());
/// assert!(!ledger.apply(&a, &done).unwrap().changed()); // a duplicate changes nothing
/// assert_eq!(ledger.ready(), vec![SubtaskId::new("b").unwrap()]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLedger {
    record: TaskRecord,
}

impl TaskLedger {
    /// Wraps a task record.
    pub fn new(record: TaskRecord) -> Self {
        Self { record }
    }

    /// The record as it stands.
    pub fn record(&self) -> &TaskRecord {
        &self.record
    }

    /// Unwraps the record.
    pub fn into_record(self) -> TaskRecord {
        self.record
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.record.id
    }

    /// Sets the status.
    pub fn set_status(&mut self, status: TaskStatus, now: DateTime<Utc>) {
        self.record.status = status;
        self.record.updated_at = now;
        if status.is_terminal() {
            self.record.finished_at = Some(now);
        }
    }

    /// Ends the task with an answer or a reason.
    pub fn finish(
        &mut self,
        status: TaskStatus,
        result: Option<String>,
        error: Option<String>,
        now: DateTime<Utc>,
    ) {
        self.record.result = result;
        self.record.error = error;
        self.set_status(status, now);
    }

    /// Adds token usage.
    pub fn add_usage(&mut self, usage: Usage) {
        self.record.usage += usage;
    }

    /// Adds a fact, unless it is already known.
    pub fn add_fact(&mut self, fact: String) {
        if !self.record.facts.contains(&fact) {
            self.record.facts.push(fact);
        }
    }

    /// Installs a validated plan.
    ///
    /// The first plan is revision 0; each later one bumps the revision, and the
    /// open subtasks of earlier revisions are superseded (completed ones stay,
    /// and the new plan may depend on them). Returns the ids that were superseded.
    pub fn install_plan(&mut self, plan: &Plan) -> Vec<SubtaskId> {
        let revision = if self.record.subtasks.is_empty() && self.record.plan_revision == 0 {
            0
        } else {
            self.record.plan_revision + 1
        };
        let mut superseded = Vec::new();
        for s in &mut self.record.subtasks {
            if SubtaskChange::Superseded.apply(s).changed() {
                superseded.push(s.id.clone());
            }
        }
        self.record.plan_revision = revision;
        for fact in &plan.facts {
            self.add_fact(fact.clone());
        }
        self.record
            .subtasks
            .extend(plan.subtasks.iter().map(|step| SubtaskRecord {
                id: step.id.clone(),
                revision,
                role: step.role.clone(),
                title: step.title.clone(),
                instruction: step.instruction.clone(),
                depends_on: step.depends_on.clone(),
                status: SubtaskStatus::Pending,
                attempts: 0,
                result: None,
                last_error: None,
                agent: None,
            }));
        superseded
    }

    /// Applies a guarded change to one subtask.
    pub fn apply(
        &mut self,
        id: &SubtaskId,
        change: &SubtaskChange,
    ) -> Result<Applied, LedgerError> {
        let subtask = self
            .record
            .subtasks
            .iter_mut()
            .find(|s| &s.id == id)
            .ok_or_else(|| LedgerError::UnknownSubtask(id.clone()))?;
        Ok(change.apply(subtask))
    }

    /// The subtask with this id.
    pub fn subtask(&self, id: &SubtaskId) -> Option<&SubtaskRecord> {
        self.record.subtask(id)
    }

    /// The subtasks of the current plan revision, in plan order.
    pub fn current(&self) -> impl Iterator<Item = &SubtaskRecord> {
        let revision = self.record.plan_revision;
        self.record
            .subtasks
            .iter()
            .filter(move |s| s.revision == revision)
    }

    /// Pending subtasks of the current plan whose dependencies are all completed.
    pub fn ready(&self) -> Vec<SubtaskId> {
        self.current()
            .filter(|s| s.status == SubtaskStatus::Pending)
            .filter(|s| {
                s.depends_on.iter().all(|d| {
                    self.record
                        .subtask(d)
                        .is_some_and(|d| d.status == SubtaskStatus::Completed)
                })
            })
            .map(|s| s.id.clone())
            .collect()
    }

    /// Whether a plan is installed and every subtask of it is completed.
    pub fn is_done(&self) -> bool {
        let mut current = self.current().peekable();
        current.peek().is_some() && current.all(|s| s.status == SubtaskStatus::Completed)
    }

    /// How many subtasks are dispatched or running.
    pub fn in_flight(&self) -> usize {
        self.current().filter(|s| s.status.is_in_flight()).count()
    }

    /// Subtasks of the current plan that failed for good.
    pub fn failed(&self) -> impl Iterator<Item = &SubtaskRecord> {
        self.current().filter(|s| s.status == SubtaskStatus::Failed)
    }

    /// Every completed subtask of any revision, in plan order: what the final answer is made of.
    pub fn completed(&self) -> impl Iterator<Item = &SubtaskRecord> {
        self.record
            .subtasks
            .iter()
            .filter(|s| s.status == SubtaskStatus::Completed)
    }

    /// Ids a new plan may not reuse: every subtask id the task has had.
    pub fn used_ids(&self) -> HashSet<SubtaskId> {
        self.record.subtasks.iter().map(|s| s.id.clone()).collect()
    }

    /// Ids of completed subtasks, on which a new plan may depend.
    pub fn completed_ids(&self) -> HashSet<SubtaskId> {
        self.completed().map(|s| s.id.clone()).collect()
    }

    /// Cancels every open subtask; returns their ids.
    pub fn cancel_open(&mut self) -> Vec<SubtaskId> {
        let mut cancelled = Vec::new();
        for s in &mut self.record.subtasks {
            if SubtaskChange::Cancelled.apply(s).changed() {
                cancelled.push(s.id.clone());
            }
        }
        cancelled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AgentId;
    use crate::plan::PlanSubtask;
    use crate::role::Role;

    fn step(id: &str, deps: &[&str]) -> PlanSubtask {
        PlanSubtask {
            id: SubtaskId::new(id).unwrap(),
            role: Role::new("analyst").unwrap(),
            title: id.to_owned(),
            instruction: format!("do {id}"),
            depends_on: deps.iter().map(|d| SubtaskId::new(*d).unwrap()).collect(),
        }
    }

    fn sid(id: &str) -> SubtaskId {
        SubtaskId::new(id).unwrap()
    }

    fn complete(ledger: &mut TaskLedger, id: &str) {
        let attempt = ledger.subtask(&sid(id)).unwrap().attempts + 1;
        ledger
            .apply(&sid(id), &SubtaskChange::Dispatched { attempt })
            .unwrap();
        let done = SubtaskChange::Completed {
            attempt,
            agent: AgentId::new("a-1").unwrap(),
            result: format!("result {id}"),
        };
        assert!(ledger.apply(&sid(id), &done).unwrap().changed());
    }

    fn ledger() -> TaskLedger {
        TaskLedger::new(TaskRecord::new(TaskId::new(), "goal", Utc::now()))
    }

    #[test]
    fn dependencies_gate_readiness() {
        let mut l = ledger();
        l.install_plan(&Plan {
            facts: vec![],
            subtasks: vec![step("a", &[]), step("b", &[]), step("c", &["a", "b"])],
        });
        assert_eq!(l.ready(), vec![sid("a"), sid("b")]);
        complete(&mut l, "a");
        assert_eq!(l.ready(), vec![sid("b")]);
        complete(&mut l, "b");
        assert_eq!(l.ready(), vec![sid("c")]);
        assert!(!l.is_done());
        complete(&mut l, "c");
        assert!(l.is_done());
        assert_eq!(l.completed().count(), 3);
    }

    #[test]
    fn a_replan_supersedes_open_work_and_keeps_results() {
        let mut l = ledger();
        l.install_plan(&Plan {
            facts: vec!["f".into()],
            subtasks: vec![step("a", &[]), step("b", &["a"])],
        });
        complete(&mut l, "a");
        let superseded = l.install_plan(&Plan {
            facts: vec!["f".into(), "g".into()],
            subtasks: vec![step("b2", &["a"])],
        });
        assert_eq!(superseded, vec![sid("b")]);
        assert_eq!(l.record().plan_revision, 1);
        assert_eq!(l.record().facts, vec!["f".to_owned(), "g".to_owned()]);
        assert_eq!(
            l.subtask(&sid("b")).unwrap().status,
            SubtaskStatus::Superseded
        );
        assert_eq!(l.ready(), vec![sid("b2")]);
        assert_eq!(l.used_ids().len(), 3);
        assert_eq!(l.completed_ids(), HashSet::from([sid("a")]));
        complete(&mut l, "b2");
        assert!(l.is_done());
    }

    #[test]
    fn an_empty_ledger_is_not_done_and_unknown_subtasks_are_errors() {
        let mut l = ledger();
        assert!(!l.is_done());
        assert_eq!(
            l.apply(&sid("x"), &SubtaskChange::Superseded),
            Err(LedgerError::UnknownSubtask(sid("x")))
        );
    }
}
