//! The progress evaluation: before re-planning a stuck run, the orchestrator
//! asks the LLM whether the run is getting anywhere (Magentic-One's progress
//! ledger questions: is progress being made, is it in a loop) and whether a
//! new plan is worth it. The reply is JSON of a schema generated from
//! [`ProgressEvaluation`], parsed leniently and validated like a plan.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::extract::extract_json;
use crate::plan::{PlanRejection, Problem};

/// What the orchestrator should do with a stuck run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Write a new plan for the work that remains.
    Replan,
    /// Stop: the goal cannot be reached this way.
    GiveUp,
}

/// The LLM's judgement of a stuck run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ProgressEvaluation")]
pub struct ProgressEvaluation {
    /// Whether the work done so far brings the goal closer.
    pub progress_being_made: bool,
    /// Whether the same failure keeps coming back.
    pub in_loop: bool,
    /// What to do next.
    pub decision: Decision,
    /// Why, in one or two sentences.
    #[schemars(length(min = 1, max = 500))]
    pub reason: String,
}

/// Parses and validates progress evaluations.
#[derive(Debug)]
pub struct EvaluationParser {
    schema: Value,
    validator: jsonschema::Validator,
}

impl EvaluationParser {
    /// A parser with the schema generated from [`ProgressEvaluation`].
    pub fn new() -> Result<Self, String> {
        let generator = schemars::generate::SchemaSettings::draft2020_12()
            .with(|s| s.inline_subschemas = true)
            .into_generator();
        let schema: Value = generator
            .into_root_schema_for::<ProgressEvaluation>()
            .into();
        let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
        Ok(Self { schema, validator })
    }

    /// The JSON schema replies must match.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Reads an evaluation from a reply: the JSON found in it, checked against
    /// the schema (every problem listed, for a repair prompt).
    pub fn parse(&self, reply: &str) -> Result<ProgressEvaluation, PlanRejection> {
        let value =
            extract_json(reply).map_err(|e| rejection(vec![Problem::at("", e.to_string())]))?;
        let problems: Vec<Problem> = self
            .validator
            .iter_errors(&value)
            .take(20)
            .map(|e| Problem::at(e.instance_path().to_string(), e.to_string()))
            .collect();
        if !problems.is_empty() {
            return Err(rejection(problems));
        }
        serde_json::from_value(value).map_err(|e| rejection(vec![Problem::at("", e.to_string())]))
    }
}

fn rejection(problems: Vec<Problem>) -> PlanRejection {
    PlanRejection { problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> EvaluationParser {
        EvaluationParser::new().unwrap()
    }

    #[test]
    fn a_valid_evaluation_is_read_from_prose_and_fences() {
        let reply = "Here you go:\n```json\n{\"progress_being_made\": false, \"in_loop\": true, \
                     \"decision\": \"give_up\", \"reason\": \"the API keeps refusing\"}\n```";
        let e = parser().parse(reply).unwrap();
        assert_eq!(e.decision, Decision::GiveUp);
        assert!(e.in_loop && !e.progress_being_made);
    }

    #[test]
    fn schema_violations_are_listed() {
        let err = parser()
            .parse(r#"{"progress_being_made": "yes", "decision": "retry", "reason": ""}"#)
            .unwrap_err();
        let text = err.to_string();
        for part in ["/progress_being_made", "/decision", "in_loop", "/reason"] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
        assert!(parser().parse("no json here").is_err());
    }

    #[test]
    fn the_schema_names_the_decisions() {
        let schema = parser().schema().to_string();
        assert!(
            schema.contains("give_up") && schema.contains("replan"),
            "{schema}"
        );
    }
}
