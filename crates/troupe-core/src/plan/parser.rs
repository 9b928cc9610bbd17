//! [`PlanParser`]: from reply text to a validated [`Plan`].

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value};

use crate::ids::SubtaskId;
use crate::plan::extract::extract_json;
use crate::plan::validate::check_draft;
use crate::plan::{Plan, PlanDraft};
use crate::role::RoleInfo;

/// The most problems reported for one reply; more only add noise to a repair prompt.
const MAX_PROBLEMS: usize = 20;

/// What a re-plan must respect: ids already used, results a new plan may build on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanContext {
    /// Ids earlier plans used; a new plan may not reuse them.
    pub used_ids: HashSet<SubtaskId>,
    /// Ids of completed subtasks a new plan may depend on.
    pub completed_ids: HashSet<SubtaskId>,
}

/// One problem with a plan: where (a JSON pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// A JSON pointer into the plan, such as `/subtasks/2/role`, or empty for the whole reply.
    pub path: String,
    /// What is wrong, worded for the LLM.
    pub message: String,
}

impl Problem {
    pub(crate) fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A reply that is not an acceptable plan (or progress evaluation), with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PlanRejection {
    /// The problems, at most twenty.
    pub problems: Vec<Problem>,
}

impl fmt::Display for PlanRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        write!(f, "the reply is invalid: {}", list.join("; "))
    }
}

impl PlanRejection {
    fn one(message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem::at("", message)],
        }
    }
}

/// Parses and validates plans for one set of roles.
///
/// ```
/// use troupe_core::plan::{PlanContext, PlanParser};
/// use troupe_core::role::{BuiltinRole, RoleInfo};
///
/// let parser = PlanParser::new(BuiltinRole::ALL.map(RoleInfo::from).to_vec(), 8).unwrap();
/// let reply = r#"Plan:
/// ```json
/// [{"id": 1, "role": "Researcher", "instruction": "Find facts"},
///  {"id": 2, "role": "writer", "instruction": "Write it up", "dependencies": [1]}]
/// ```"#;
/// let plan = parser.parse(reply, &PlanContext::default()).unwrap();
/// assert_eq!(plan.subtasks.len(), 2);
/// assert_eq!(plan.subtasks[1].depends_on[0].as_str(), "1");
///
/// let err = parser.parse(r#"{"subtasks": [{"id": "a", "role": "chef", "instruction": "cook"}]}"#,
///                        &PlanContext::default()).unwrap_err();
/// assert!(err.to_string().contains("/subtasks/0/role"));
/// ```
pub struct PlanParser {
    roles: Vec<RoleInfo>,
    max_subtasks: usize,
    schema: Value,
    validator: jsonschema::Validator,
}

impl fmt::Debug for PlanParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlanParser")
            .field("roles", &self.roles)
            .field("max_subtasks", &self.max_subtasks)
            .finish_non_exhaustive()
    }
}

/// A parser that could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanParserError {
    /// No roles to plan for.
    #[error("no worker roles are registered; a plan needs at least one")]
    NoRoles,
    /// A plan must be allowed at least one subtask.
    #[error("max_subtasks must be at least 1")]
    NoSubtasks,
    /// The generated schema did not compile (a bug).
    #[error("the plan schema does not compile: {0}")]
    Schema(String),
}

impl PlanParser {
    /// A parser for plans over `roles`, with at most `max_subtasks` subtasks.
    pub fn new(roles: Vec<RoleInfo>, max_subtasks: usize) -> Result<Self, PlanParserError> {
        if roles.is_empty() {
            return Err(PlanParserError::NoRoles);
        }
        if max_subtasks == 0 {
            return Err(PlanParserError::NoSubtasks);
        }
        let schema = plan_schema(&roles, max_subtasks);
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| PlanParserError::Schema(e.to_string()))?;
        Ok(Self {
            roles,
            max_subtasks,
            schema,
            validator,
        })
    }

    /// The JSON schema of a plan, with the role names and the size limit filled in.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// The roles plans may use.
    pub fn roles(&self) -> &[RoleInfo] {
        &self.roles
    }

    /// The most subtasks a plan may have.
    pub fn max_subtasks(&self) -> usize {
        self.max_subtasks
    }

    /// Reads a plan from an LLM reply.
    pub fn parse(&self, reply: &str, ctx: &PlanContext) -> Result<Plan, PlanRejection> {
        let value = extract_json(reply).map_err(|e| PlanRejection::one(e.to_string()))?;
        self.check(value, ctx)
    }

    /// Validates a plan already parsed as JSON.
    pub fn check(&self, value: Value, ctx: &PlanContext) -> Result<Plan, PlanRejection> {
        let value = normalise(value).map_err(PlanRejection::one)?;
        let problems: Vec<Problem> = self
            .validator
            .iter_errors(&value)
            .take(MAX_PROBLEMS)
            .map(|e| Problem::at(e.instance_path().to_string(), e.to_string()))
            .collect();
        if !problems.is_empty() {
            return Err(PlanRejection { problems });
        }
        let draft: PlanDraft =
            serde_json::from_value(value).map_err(|e| PlanRejection::one(e.to_string()))?;
        let roles: HashSet<&str> = self.roles.iter().map(|r| r.role.as_str()).collect();
        check_draft(draft, &roles, self.max_subtasks, ctx).map_err(|mut problems| {
            problems.truncate(MAX_PROBLEMS);
            PlanRejection { problems }
        })
    }
}

/// The schema generated from [`PlanDraft`], narrowed to these roles and this size.
fn plan_schema(roles: &[RoleInfo], max_subtasks: usize) -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema: Value = generator.into_root_schema_for::<PlanDraft>().into();
    if let Some(subtasks) = schema.pointer_mut("/properties/subtasks") {
        subtasks["maxItems"] = Value::from(max_subtasks);
    }
    if let Some(role) = schema.pointer_mut("/properties/subtasks/items/properties/role") {
        role["enum"] = roles.iter().map(|r| Value::from(r.role.as_str())).collect();
    }
    schema
}

/// Field names models use instead of ours.
const STEP_ALIASES: &[(&str, &str)] = &[
    ("dependencies", "depends_on"),
    ("depends", "depends_on"),
    ("deps", "depends_on"),
    ("dependsOn", "depends_on"),
    ("requires", "depends_on"),
    ("description", "instruction"),
    ("instructions", "instruction"),
    ("task", "instruction"),
    ("prompt", "instruction"),
    ("name", "title"),
    ("agent", "role"),
    ("worker", "role"),
    ("assignee", "role"),
];

/// Forgives the usual slips: a top-level array, a wrapping `plan` object,
/// aliases, numeric ids, a single dependency as a string, role case, fields we
/// do not use, subtasks repeated word for word. What is still wrong is left
/// for the schema to report.
fn normalise(value: Value) -> Result<Value, String> {
    let mut root = match value {
        Value::Array(items) => Map::from_iter([("subtasks".to_owned(), Value::Array(items))]),
        Value::Object(map) => map,
        _ => return Err("the reply must be a JSON object with a \"subtasks\" array".into()),
    };
    if !root.contains_key("subtasks") {
        for key in ["plan", "tasks", "steps"] {
            match root.remove(key) {
                Some(Value::Object(inner)) => return normalise(Value::Object(inner)),
                Some(Value::Array(items)) => {
                    root.insert("subtasks".into(), Value::Array(items));
                    break;
                }
                Some(other) => {
                    root.insert(key.into(), other);
                }
                None => {}
            }
        }
    }
    root.retain(|k, _| k == "subtasks" || k == "facts");
    if let Some(Value::String(fact)) = root.get("facts") {
        let fact = fact.clone();
        root.insert("facts".into(), Value::Array(vec![Value::String(fact)]));
    }
    if let Some(Value::Array(steps)) = root.get_mut("subtasks") {
        for step in steps.iter_mut() {
            if let Value::Object(fields) = step {
                normalise_step(fields);
            }
        }
        // A small model caught in a loop repeats whole subtasks: an exact
        // copy of an earlier one adds nothing. (A copy that differs in any
        // field is left for the checks to report as a reused id.)
        let mut kept: Vec<Value> = Vec::with_capacity(steps.len());
        for step in steps.drain(..) {
            if !kept.contains(&step) {
                kept.push(step);
            }
        }
        *steps = kept;
    }
    Ok(Value::Object(root))
}

fn normalise_step(fields: &mut Map<String, Value>) {
    for (alias, name) in STEP_ALIASES {
        if !fields.contains_key(*name)
            && let Some(v) = fields.remove(*alias)
        {
            fields.insert((*name).to_owned(), v);
        }
    }
    fields.retain(|k, _| {
        matches!(
            k.as_str(),
            "id" | "role" | "title" | "instruction" | "depends_on"
        )
    });
    if let Some(id) = fields.get_mut("id") {
        *id = id_string(id);
    }
    if let Some(Value::String(role)) = fields.get_mut("role") {
        *role = role.trim().to_lowercase();
    }
    match fields.get_mut("depends_on") {
        Some(Value::Null) => {
            fields.insert("depends_on".into(), Value::Array(vec![]));
        }
        Some(dep @ (Value::String(_) | Value::Number(_))) => {
            *dep = Value::Array(vec![id_string(dep)]);
        }
        Some(Value::Array(deps)) => {
            for d in deps.iter_mut() {
                *d = id_string(d);
            }
        }
        _ => {}
    }
    if let Some(Value::Null) = fields.get("title") {
        fields.remove("title");
    }
}

fn id_string(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::String(n.to_string()),
        Value::String(s) => Value::String(s.trim().to_owned()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::role::{BuiltinRole, Role};

    fn parser() -> PlanParser {
        PlanParser::new(BuiltinRole::ALL.map(RoleInfo::from).to_vec(), 5).unwrap()
    }

    fn problems(reply: &str) -> Vec<String> {
        parser()
            .parse(reply, &PlanContext::default())
            .unwrap_err()
            .problems
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn the_schema_names_the_roles_and_the_limit() {
        let p = parser();
        let schema = p.schema();
        assert_eq!(schema["properties"]["subtasks"]["maxItems"], 5);
        let roles = &schema["properties"]["subtasks"]["items"]["properties"]["role"]["enum"];
        assert_eq!(roles.as_array().unwrap().len(), 5);
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], json!(["subtasks"]));
    }

    #[test]
    fn the_example_plan_is_valid() {
        let plan = parser()
            .parse(&crate::plan::example_plan_json(), &PlanContext::default())
            .unwrap();
        assert_eq!(plan.subtasks.len(), 3);
        assert_eq!(plan.facts.len(), 2);
        assert_eq!(plan.subtasks[2].depends_on.len(), 2);
        assert_eq!(plan.subtasks[0].role, Role::new("analyst").unwrap());
    }

    #[test]
    fn slips_are_forgiven() {
        let reply = r#"{"plan": {"steps": [
            {"id": 1, "agent": " Coder ", "description": "write", "estimate": "2h"},
            {"id": "2", "role": "reviewer", "task": "review", "depends": 1, "name": null}
        ]}, "notes": "x"}"#;
        let plan = parser().parse(reply, &PlanContext::default()).unwrap();
        assert_eq!(plan.subtasks[0].role.as_str(), "coder");
        assert_eq!(
            plan.subtasks[1].depends_on,
            vec![SubtaskId::new("1").unwrap()]
        );
    }

    #[test]
    fn subtasks_repeated_word_for_word_are_dropped_and_others_are_not() {
        let step = |id: u32, text: &str| {
            format!(
                r#"{{"id": "s{id}", "role": "writer", "title": "T", "instruction": "{text}", "depends_on": []}}"#
            )
        };
        let looped = format!(
            r#"{{"subtasks": [{}, {}, {}, {}, {}]}}"#,
            step(1, "a"),
            step(2, "b"),
            step(1, "a"),
            step(2, "b"),
            step(1, "a")
        );
        let plan = parser().parse(&looped, &PlanContext::default()).unwrap();
        let ids: Vec<&str> = plan.subtasks.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["s1", "s2"]);

        let reused = format!(
            r#"{{"subtasks": [{}, {}]}}"#,
            step(1, "a"),
            step(1, "other")
        );
        let problems = problems(&reused);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("used by more than one subtask")),
            "{problems:?}"
        );
    }

    #[test]
    fn schema_violations_are_listed_with_their_paths() {
        let found = problems(r#"{"subtasks": [{"id": "a b", "role": "chef"}]}"#);
        assert!(
            found.iter().any(|p| p.starts_with("/subtasks/0/id")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.starts_with("/subtasks/0/role")),
            "{found:?}"
        );
        assert!(found.iter().any(|p| p.contains("instruction")), "{found:?}");
    }

    #[test]
    fn semantic_problems_are_listed() {
        let dup = r#"[{"id": "a", "role": "coder", "instruction": "x"},
                      {"id": "a", "role": "coder", "instruction": "y", "depends_on": ["zz"]}]"#;
        let found = problems(dup);
        assert!(
            found.iter().any(|p| p.contains("more than one")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.contains("\"zz\", which is not in the plan")),
            "{found:?}"
        );

        let cycle = r#"[{"id": "a", "role": "coder", "instruction": "x", "depends_on": ["c"]},
                        {"id": "b", "role": "coder", "instruction": "y", "depends_on": ["a"]},
                        {"id": "c", "role": "coder", "instruction": "z", "depends_on": ["b"]},
                        {"id": "d", "role": "coder", "instruction": "w"}]"#;
        let found = problems(cycle);
        assert_eq!(
            found,
            vec!["/subtasks: these subtasks depend on each other in a cycle: a, b, c"]
        );

        let selfdep = r#"[{"id": "a", "role": "coder", "instruction": "x", "depends_on": ["a"]}]"#;
        assert!(problems(selfdep)[0].contains("depends on itself"));
    }

    #[test]
    fn size_is_bounded_and_empty_plans_rejected() {
        let big: Vec<Value> = (0..6)
            .map(|i| json!({"id": format!("s{i}"), "role": "writer", "instruction": "x"}))
            .collect();
        let found = problems(&Value::Array(big).to_string());
        assert!(
            found.iter().any(|p| p.starts_with("/subtasks")),
            "{found:?}"
        );
        assert!(!problems(r#"{"subtasks": []}"#).is_empty());
        assert!(!problems("[]").is_empty());
        assert!(!problems("Sorry, I cannot help with that.").is_empty());
    }

    #[test]
    fn replans_cannot_reuse_ids_but_may_depend_on_completed_work() {
        let ctx = PlanContext {
            used_ids: HashSet::from([SubtaskId::new("s1").unwrap(), SubtaskId::new("s2").unwrap()]),
            completed_ids: HashSet::from([SubtaskId::new("s1").unwrap()]),
        };
        let p = parser();
        let ok = r#"[{"id": "r1", "role": "writer", "instruction": "x", "depends_on": ["s1"]}]"#;
        assert!(p.parse(ok, &ctx).is_ok());
        let reuse = r#"[{"id": "s2", "role": "writer", "instruction": "x"}]"#;
        assert!(
            p.parse(reuse, &ctx)
                .unwrap_err()
                .to_string()
                .contains("earlier plan")
        );
        let failed_dep =
            r#"[{"id": "r1", "role": "writer", "instruction": "x", "depends_on": ["s2"]}]"#;
        assert!(p.parse(failed_dep, &ctx).is_err());
    }

    #[test]
    fn parser_needs_roles() {
        assert!(matches!(
            PlanParser::new(vec![], 3),
            Err(PlanParserError::NoRoles)
        ));
        assert!(matches!(
            PlanParser::new(vec![BuiltinRole::Coder.into()], 0),
            Err(PlanParserError::NoSubtasks)
        ));
    }
}
