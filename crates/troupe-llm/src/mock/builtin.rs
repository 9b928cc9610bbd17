//! The mock's built-in replies: deterministic, valid, and derived from the request.
//!
//! - A plan for any goal: a researcher and an analyst in parallel, then a
//!   writer that depends on both (using whichever roles the request's schema
//!   allows when those are missing). Re-plans use fresh ids (`r1s1`, ...).
//! - A worker's result names its role, subtask and instruction.
//! - A synthesis names the goal and repeats the result sections of its prompt,
//!   so a test can see that every result reached it.

use serde_json::{Value, json};
use troupe_core::llm::{CallKind, ChatRequest, ChatRole, ResponseFormat};

const PREFERRED: [&str; 3] = ["researcher", "analyst", "writer"];

pub(crate) fn reply(request: &ChatRequest) -> String {
    match request.meta.kind {
        CallKind::Plan | CallKind::Replan => plan(request).to_string(),
        CallKind::Work => work(request),
        CallKind::Synthesize => synthesis(request),
        CallKind::Evaluate => serde_json::json!({
            "progress_being_made": true,
            "in_loop": false,
            "decision": "replan",
            "reason": "a new plan can avoid what failed"
        })
        .to_string(),
        CallKind::Other => "ok".to_owned(),
    }
}

/// The built-in plan for a request.
pub(crate) fn plan(request: &ChatRequest) -> Value {
    let roles = allowed_roles(request);
    let role = |i: usize| -> String {
        let preferred = PREFERRED[i];
        if roles.is_empty() || roles.iter().any(|r| r == preferred) {
            preferred.to_owned()
        } else {
            roles[i % roles.len()].clone()
        }
    };
    let prefix = if request.meta.revision == 0 {
        "s".to_owned()
    } else {
        format!("r{}s", request.meta.revision)
    };
    let goal = goal(request);
    json!({
        "facts": [format!("The goal is: {goal}")],
        "subtasks": [
            {"id": format!("{prefix}1"), "role": role(0), "title": "Gather facts",
             "instruction": format!("Gather the facts needed for: {goal}"), "depends_on": []},
            {"id": format!("{prefix}2"), "role": role(1), "title": "Analyse",
             "instruction": format!("Analyse what matters most for: {goal}"), "depends_on": []},
            {"id": format!("{prefix}3"), "role": role(2), "title": "Write the answer",
             "instruction": format!("Write the answer to: {goal}"),
             "depends_on": [format!("{prefix}1"), format!("{prefix}2")]}
        ]
    })
}

fn synthesis(request: &ChatRequest) -> String {
    let prompt = request.last_user_message().unwrap_or_default();
    // The result sections start at the first `### ` heading; the prompt's closing request follows them.
    let sections = prompt.find("### ").map_or(prompt, |i| &prompt[i..]);
    let sections = sections
        .rsplit_once("\n\n")
        .map_or(sections, |(body, _)| body);
    format!("Answer to: {}\n\n{}", goal(request), sections.trim())
}

fn work(request: &ChatRequest) -> String {
    let role = request.meta.role.as_ref().map_or("worker", |r| r.as_str());
    let subtask = request.meta.subtask_id.as_ref().map_or("?", |s| s.as_str());
    let prompt = request.last_user_message().unwrap_or_default();
    let instruction = prompt
        .lines()
        .find_map(|l| l.trim().strip_prefix("Instruction:"))
        .map_or("the assigned work", str::trim);
    format!("Result of {subtask} by the {role}: {instruction}")
}

/// The roles the plan schema in the request allows, if it names them.
fn allowed_roles(request: &ChatRequest) -> Vec<String> {
    let ResponseFormat::JsonSchema { schema, .. } = &request.response_format else {
        return Vec::new();
    };
    schema
        .pointer("/properties/subtasks/items/properties/role/enum")
        .and_then(Value::as_array)
        .map(|roles| {
            roles
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The goal: the first line of the first user message, without a `Goal:` label.
fn goal(request: &ChatRequest) -> String {
    let text = request
        .messages
        .iter()
        .find(|m| m.role == ChatRole::User)
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let line = line.strip_prefix("Goal:").unwrap_or(line).trim();
    line.chars().take(200).collect()
}
