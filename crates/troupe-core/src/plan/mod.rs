//! Plans: what the orchestrator's LLM writes, and how it is checked.
//!
//! The LLM answers with a [`PlanDraft`] (loose strings, described by a JSON
//! schema generated from the type). [`PlanParser::parse`] takes the reply text,
//! finds the JSON in it ([`extract`]), normalises common slips (a top-level
//! array, `dependencies` for `depends_on`, numeric ids), checks it against the
//! schema, then checks what a schema cannot say ([`validate`]): unique ids,
//! known roles, dependencies that exist, no cycles, a bounded size. The result
//! is a typed [`Plan`], or a [`PlanRejection`] listing every problem, worded to
//! be sent back to the LLM so that it can repair its answer.

mod draft;
mod evaluation;
pub mod extract;
mod parser;
pub mod validate;

pub use draft::{PlanDraft, StepDraft, example_plan_json};
pub use evaluation::{Decision, EvaluationParser, ProgressEvaluation};
pub use parser::{PlanContext, PlanParser, PlanParserError, PlanRejection, Problem};

use serde::{Deserialize, Serialize};

use crate::ids::SubtaskId;
use crate::role::Role;

/// A validated plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Facts the planner stated: what is given, what must be found out.
    pub facts: Vec<String>,
    /// The subtasks, in the order the planner gave them.
    pub subtasks: Vec<PlanSubtask>,
}

/// One subtask of a validated plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSubtask {
    /// Its id, unique within the task.
    pub id: SubtaskId,
    /// The role that works on it.
    pub role: Role,
    /// A short title (may be empty).
    pub title: String,
    /// What the worker must do.
    pub instruction: String,
    /// The subtasks whose results it needs.
    pub depends_on: Vec<SubtaskId>,
}
