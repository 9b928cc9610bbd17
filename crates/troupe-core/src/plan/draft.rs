//! The plan as the LLM writes it, and its JSON schema.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A plan as written by the LLM, before validation.
///
/// Its JSON schema (see [`PlanParser::schema`](super::PlanParser::schema)) is
/// generated from this type and put in the planning prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Plan")]
pub struct PlanDraft {
    /// Facts about the goal: what is given, what must be looked up or derived.
    #[serde(default)]
    pub facts: Vec<String>,
    /// The subtasks. Each is done by one worker role; independent subtasks run in parallel.
    #[schemars(length(min = 1))]
    pub subtasks: Vec<StepDraft>,
}

/// One subtask as written by the LLM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDraft {
    /// A short unique id such as "s1".
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"))]
    pub id: String,
    /// The worker role that does this subtask.
    pub role: String,
    /// A title of a few words.
    #[serde(default)]
    pub title: String,
    /// Exactly what the worker must do and produce, self-contained.
    #[schemars(length(min = 1))]
    pub instruction: String,
    /// Ids of the subtasks whose results this one needs; empty if none.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// A short, valid example plan for the planning prompt.
pub fn example_plan_json() -> String {
    let example = serde_json::json!({
        "facts": ["The data is in sales.csv", "The report is for managers"],
        "subtasks": [
            {"id": "s1", "role": "analyst", "title": "Compute figures",
             "instruction": "Compute total and monthly revenue from sales.csv.", "depends_on": []},
            {"id": "s2", "role": "researcher", "title": "Market context",
             "instruction": "Summarise market trends that explain the figures.", "depends_on": []},
            {"id": "s3", "role": "writer", "title": "Write report",
             "instruction": "Write a one-page sales report from the figures and context.",
             "depends_on": ["s1", "s2"]}
        ]
    });
    example.to_string()
}
