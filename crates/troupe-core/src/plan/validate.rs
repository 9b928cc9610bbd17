//! The checks a JSON schema cannot express: unique ids, known roles,
//! dependencies that exist, no cycles, a bounded size.

use std::collections::{HashMap, HashSet};

use crate::ids::SubtaskId;
use crate::plan::parser::{PlanContext, Problem};
use crate::plan::{Plan, PlanDraft, PlanSubtask};
use crate::role::Role;

/// Turns a schema-valid draft into a [`Plan`], or lists every problem with it.
pub fn check_draft(
    draft: PlanDraft,
    known_roles: &HashSet<&str>,
    max_subtasks: usize,
    ctx: &PlanContext,
) -> Result<Plan, Vec<Problem>> {
    let mut problems = Vec::new();
    if draft.subtasks.is_empty() {
        problems.push(Problem::at(
            "/subtasks",
            "the plan has no subtasks; give at least one",
        ));
    }
    if draft.subtasks.len() > max_subtasks {
        problems.push(Problem::at(
            "/subtasks",
            format!(
                "the plan has {} subtasks; use at most {max_subtasks}",
                draft.subtasks.len()
            ),
        ));
    }

    let mut seen: HashSet<&str> = HashSet::new();
    for (i, step) in draft.subtasks.iter().enumerate() {
        let at = |field: &str| format!("/subtasks/{i}/{field}");
        if SubtaskId::new(step.id.as_str()).is_err() {
            problems.push(Problem::at(
                at("id"),
                format!(
                    "{:?} is not a valid id (use letters, digits, '_', '-', '.')",
                    step.id
                ),
            ));
        } else if !seen.insert(step.id.as_str()) {
            problems.push(Problem::at(
                at("id"),
                format!("id {:?} is used by more than one subtask", step.id),
            ));
        } else if ctx.used_ids.iter().any(|u| u.as_str() == step.id) {
            problems.push(Problem::at(
                at("id"),
                format!(
                    "id {:?} was used by an earlier plan; choose a new id",
                    step.id
                ),
            ));
        }
        if !known_roles.contains(step.role.as_str()) {
            let mut roles: Vec<&str> = known_roles.iter().copied().collect();
            roles.sort_unstable();
            problems.push(Problem::at(
                at("role"),
                format!(
                    "unknown role {:?}; use one of: {}",
                    step.role,
                    roles.join(", ")
                ),
            ));
        }
        if step.instruction.trim().is_empty() {
            problems.push(Problem::at(at("instruction"), "the instruction is empty"));
        }
    }

    let ids: HashSet<&str> = draft.subtasks.iter().map(|s| s.id.as_str()).collect();
    for (i, step) in draft.subtasks.iter().enumerate() {
        for (j, dep) in step.depends_on.iter().enumerate() {
            let at = format!("/subtasks/{i}/depends_on/{j}");
            if dep == &step.id {
                problems.push(Problem::at(
                    at,
                    format!("subtask {:?} depends on itself", step.id),
                ));
            } else if !ids.contains(dep.as_str())
                && !ctx.completed_ids.iter().any(|c| c.as_str() == dep)
            {
                problems.push(Problem::at(
                    at,
                    format!(
                        "subtask {:?} depends on {dep:?}, which is not in the plan",
                        step.id
                    ),
                ));
            }
        }
    }
    if problems.is_empty()
        && let Some(cycle) = find_cycle(&draft)
    {
        problems.push(Problem::at(
            "/subtasks",
            format!(
                "these subtasks depend on each other in a cycle: {}",
                cycle.join(", ")
            ),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let mut steps = Vec::with_capacity(draft.subtasks.len());
    for step in draft.subtasks {
        let (Ok(id), Ok(role)) = (SubtaskId::new(step.id), Role::new(step.role)) else {
            // Both were checked above; a failure here would be a bug in the checks.
            return Err(vec![Problem::at(
                "/subtasks",
                "internal error: an id or role failed a second check",
            )]);
        };
        let mut depends_on = Vec::with_capacity(step.depends_on.len());
        for dep in step.depends_on {
            if let Ok(dep) = SubtaskId::new(dep)
                && !depends_on.contains(&dep)
            {
                depends_on.push(dep);
            }
        }
        steps.push(PlanSubtask {
            id,
            role,
            title: step.title.trim().to_owned(),
            instruction: step.instruction.trim().to_owned(),
            depends_on,
        });
    }
    let facts = draft
        .facts
        .into_iter()
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty())
        .collect();
    Ok(Plan {
        facts,
        subtasks: steps,
    })
}

/// The ids left in a cycle after removing every subtask whose dependencies can be met (Kahn).
fn find_cycle(draft: &PlanDraft) -> Option<Vec<String>> {
    let ids: HashSet<&str> = draft.subtasks.iter().map(|s| s.id.as_str()).collect();
    let mut indegree: HashMap<&str, usize> = HashMap::new();
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for step in &draft.subtasks {
        let inside: HashSet<&str> = step
            .depends_on
            .iter()
            .map(String::as_str)
            .filter(|d| ids.contains(d))
            .collect();
        indegree.insert(step.id.as_str(), inside.len());
        for dep in inside {
            dependents.entry(dep).or_default().push(step.id.as_str());
        }
    }
    let mut queue: Vec<&str> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(id, _)| *id)
        .collect();
    while let Some(id) = queue.pop() {
        for next in dependents.get(id).into_iter().flatten() {
            if let Some(d) = indegree.get_mut(next) {
                *d -= 1;
                if *d == 0 {
                    queue.push(next);
                }
            }
        }
    }
    let mut left: Vec<String> = indegree
        .into_iter()
        .filter(|(_, d)| *d > 0)
        .map(|(id, _)| id.to_owned())
        .collect();
    if left.is_empty() {
        None
    } else {
        left.sort();
        Some(left)
    }
}
