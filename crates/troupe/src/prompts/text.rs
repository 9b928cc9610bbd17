//! The text of every default prompt: planning, re-planning, repair,
//! evaluation, synthesis, and each worker role's system prompt and task
//! prompt. [`DefaultPrompts`](super::DefaultPrompts) serves them.

use std::fmt::Write as _;

use troupe_core::envelope::DependencyResult;
use troupe_core::ledger::TaskLedger;
use troupe_core::plan::{PlanRejection, example_plan_json};
use troupe_core::role::{BuiltinRole, RoleInfo};
use troupe_core::task::SubtaskStatus;

use crate::worker::Job;

/// The orchestrator's system prompt for planning.
pub(crate) fn plan_system(
    roles: &[RoleInfo],
    max_subtasks: usize,
    schema: &serde_json::Value,
) -> String {
    let mut workers = String::new();
    for r in roles {
        let _ = writeln!(workers, "- {}: {}", r.role, r.description);
    }
    format!(
        "You are the orchestrator of a team of AI workers. Break the user's goal into subtasks for \
the workers.\n\n\
Workers (use these role names exactly):\n{workers}\n\
Rules:\n\
- Each subtask is done by one worker, who sees only its instruction, the goal, the facts, and the \
results of the subtasks it depends on. Make every instruction self-contained and specific.\n\
- List in depends_on the ids of the subtasks whose results a subtask needs. Subtasks that do not \
depend on each other run in parallel.\n\
- Use between 1 and {max_subtasks} subtasks; fewer is better for a simple goal. The last subtask \
should produce what the goal asks for.\n\
- Put what is given and what must be found out in facts.\n\
- Reply with one JSON object that matches this JSON schema, and nothing else:\n{schema}\n\n\
Example of a valid reply:\n{example}",
        example = example_plan_json(),
    )
}

/// The first planning message.
pub(crate) fn plan_user(goal: &str) -> String {
    format!("Goal: {goal}")
}

/// The message asking the LLM to repair a rejected reply.
pub(crate) fn repair(rejection: &PlanRejection) -> String {
    let mut text = String::from("Your reply could not be used:\n");
    for p in &rejection.problems {
        let _ = writeln!(text, "- {p}");
    }
    text.push_str("Reply again with only the corrected JSON object.");
    text
}

/// What happened to a stuck run: the goal, why it cannot finish, what failed,
/// what is done (results fitted into `budget` characters), the facts.
pub(crate) fn situation(ledger: &TaskLedger, reason: &str, budget: usize) -> String {
    let record = ledger.record();
    let mut text = format!(
        "Goal: {}\n\nThe current plan cannot finish: {reason}\n",
        record.goal
    );
    let failed: Vec<_> = ledger
        .current()
        .filter(|s| s.status == SubtaskStatus::Failed || s.last_error.is_some())
        .collect();
    if !failed.is_empty() {
        text.push_str("\nWhat went wrong:\n");
        for s in failed {
            let error = s.last_error.as_deref().unwrap_or("unknown error");
            let _ = writeln!(
                text,
                "- {} ({}) after {} attempt(s): {}",
                s.id,
                s.role,
                s.attempts,
                clip(error, 500)
            );
        }
    }
    let completed: Vec<_> = ledger.completed().collect();
    if !completed.is_empty() {
        text.push_str(
            "\nCompleted subtasks; a new subtask may list their ids in depends_on instead of redoing them:\n",
        );
        let share = budget / completed.len().max(1) / 2;
        for s in completed {
            let result = s.result.as_deref().unwrap_or_default();
            let _ = writeln!(
                text,
                "- {} ({}) {}: {}",
                s.id,
                s.role,
                s.title,
                clip(result, share.max(200))
            );
        }
    }
    if !record.facts.is_empty() {
        text.push_str("\nKnown facts:\n");
        for f in &record.facts {
            let _ = writeln!(text, "- {f}");
        }
    }
    text
}

/// The message asking for a new plan after the current one failed.
pub(crate) fn replan_user(ledger: &TaskLedger, situation: &str) -> String {
    let mut text = situation.to_owned();
    let mut used: Vec<String> = ledger
        .used_ids()
        .into_iter()
        .map(|i| i.to_string())
        .collect();
    used.sort();
    let _ = write!(
        text,
        "\nIds already used, which new subtasks must not reuse: {}\n\
         Write a new plan for the work that remains, avoiding what failed.",
        used.join(", ")
    );
    text
}

/// The message asking the LLM to judge a stuck run.
pub(crate) fn evaluation_user(situation: &str) -> String {
    format!("{situation}\nJudge the run now.")
}

/// The orchestrator's system prompt for judging a stuck run.
pub(crate) fn evaluation_system(schema: &serde_json::Value) -> String {
    format!(
        "You are the orchestrator of a team of AI workers. Their plan for the user's goal is stuck: \
some subtasks failed. Judge the run before a new plan is written:\n\
- progress_being_made: whether the work done so far brings the goal closer;\n\
- in_loop: whether the same failure keeps coming back;\n\
- decision: \"replan\" when a different plan could still reach the goal, \"give_up\" when it cannot \
(for example the goal is impossible, or every attempt fails the same way);\n\
- reason: why, in one or two sentences.\n\
Reply with one JSON object that matches this JSON schema, and nothing else:\n{schema}"
    )
}

/// The orchestrator's system prompt for the final answer.
pub(crate) fn synthesis_system() -> String {
    "You are the orchestrator of a team of AI workers. The workers have finished their subtasks. \
Write the final answer to the user's goal from their results: answer the goal directly and \
completely, keep what is correct and useful, resolve contradictions, and do not mention the \
workers, the subtasks or the process."
        .to_owned()
}

/// The request for the final answer.
pub(crate) fn synthesis_user(goal: &str, results: &[DependencyResult], budget: usize) -> String {
    let mut text = format!("Goal: {goal}\n\nResults of the subtasks:\n");
    append_results(&mut text, results, budget);
    text.push_str("\nWrite the final answer now.");
    text
}

/// A worker's system prompt.
pub(crate) fn worker_system(info: &RoleInfo) -> String {
    let framing = match info.role.builtin() {
        Some(BuiltinRole::Researcher) => {
            "You are a meticulous researcher. Gather the facts, background and sources your subtask \
needs. Say what is known, what is uncertain, and where each fact comes from. Be concise and \
structured."
        }
        Some(BuiltinRole::Coder) => {
            "You are an expert software engineer. Write correct, complete, idiomatic code for your \
subtask, in fenced code blocks that name the language, with brief explanations. State your \
assumptions and handle edge cases and errors."
        }
        Some(BuiltinRole::Analyst) => {
            "You are a careful data analyst. Compute figures exactly and show how you got them, \
compare, find trends and explain what they mean. Use tables where they help. Never invent data."
        }
        Some(BuiltinRole::Writer) => {
            "You are a skilled writer. Write clear, well-organised prose for the intended reader from \
the material you are given. Do not invent facts that are not in it."
        }
        Some(BuiltinRole::Reviewer) => {
            "You are a rigorous reviewer. Check the work you are given for errors, security issues, \
risks and gaps. List each finding with its severity and a concrete fix; say so when you find none."
        }
        None => "",
    };
    if framing.is_empty() {
        format!(
            "You are the {} of a team of AI workers: you {}. Do your subtask well and reply with its \
result only.",
            info.role, info.description
        )
    } else {
        format!(
            "{framing} You are one worker of a team; reply with the result of your subtask only."
        )
    }
}

/// A worker's task prompt, with dependency results fitted into `budget` characters.
pub(crate) fn worker_user(p: &Job, budget: usize) -> String {
    let mut text = format!(
        "Goal of the whole team: {}\n\nYour subtask ({})",
        p.goal, p.subtask_id
    );
    if !p.title.is_empty() {
        let _ = write!(text, ": {}", p.title);
    }
    let _ = write!(text, "\nInstruction: {}\n", p.instruction);
    if !p.facts.is_empty() {
        text.push_str("\nKnown facts:\n");
        for f in &p.facts {
            let _ = writeln!(text, "- {f}");
        }
    }
    if !p.dependencies.is_empty() {
        text.push_str("\nResults of the subtasks yours depends on:\n");
        append_results(&mut text, &p.dependencies, budget);
    }
    text.push_str("\nDo your subtask now and reply with its result.");
    text
}

/// Appends results as sections, fitted into `budget` characters. `results`
/// come in plan order, oldest first; when they do not all fit, the oldest are
/// cut first: the newest keep as much as the budget allows, older ones are
/// truncated, and those left without room are named but omitted.
fn append_results(text: &mut String, results: &[DependencyResult], budget: usize) {
    let mut limits = vec![0; results.len()];
    let mut left = budget;
    for (i, r) in results.iter().enumerate().rev() {
        let take = r.result.chars().count().min(left);
        limits[i] = take;
        left -= take;
    }
    for (r, limit) in results.iter().zip(limits) {
        let title = if r.title.is_empty() {
            String::new()
        } else {
            format!(" {}", r.title)
        };
        let body = if limit == 0 && !r.result.is_empty() {
            "[omitted: no room left in the model's context]".to_owned()
        } else {
            clip(&r.result, limit)
        };
        let _ = write!(text, "\n### {} ({}){title}\n{body}\n", r.id, r.role);
    }
}

/// `text` cut to `max` characters, marked when cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(14)).collect();
    out.push_str(" […truncated]");
    out
}

#[cfg(test)]
mod tests {
    use troupe_core::{Role, SubtaskId};

    use super::*;

    fn dep(id: &str, len: usize) -> DependencyResult {
        DependencyResult {
            id: SubtaskId::new(id).unwrap(),
            role: Role::new("researcher").unwrap(),
            title: String::new(),
            result: "x".repeat(len),
        }
    }

    #[test]
    fn the_oldest_results_are_cut_first() {
        let sections = |budget| {
            let mut text = String::new();
            append_results(
                &mut text,
                &[dep("a", 2_000), dep("b", 2_000), dep("c", 100)],
                budget,
            );
            text.split("### ")
                .skip(1)
                .map(|s| s.chars().filter(|c| *c == 'x').count())
                .collect::<Vec<_>>()
        };
        // Everything fits.
        assert_eq!(sections(10_000), [2_000, 2_000, 100]);
        // The newest (c, then b) stay whole; the oldest (a) is truncated.
        let cut = sections(3_000);
        assert_eq!(cut[1..], [2_000, 100]);
        assert!(cut[0] > 800 && cut[0] < 900, "{cut:?}");
        // No room left for the oldest: it is named, its text omitted.
        let mut text = String::new();
        append_results(&mut text, &[dep("a", 2_000), dep("b", 2_000)], 1_500);
        assert!(text.contains("### a (researcher)\n[omitted"), "{text}");
        assert!(text.contains("### b (researcher)\nxxx"), "{text}");
    }

    #[test]
    fn worker_prompts_carry_the_instruction_line() {
        let p = Job {
            task_id: troupe_core::TaskId::new(),
            subtask_id: SubtaskId::new("s2").unwrap(),
            attempt: 1,
            goal: "g".into(),
            role: Role::new("writer").unwrap(),
            title: "t".into(),
            instruction: "do it".into(),
            facts: vec!["f".to_owned()],
            dependencies: vec![dep("s1", 20)],
            timeout: std::time::Duration::from_secs(1),
        };
        let text = worker_user(&p, 1000);
        assert!(text.contains("\nInstruction: do it\n"));
        assert!(text.contains("### s1 (researcher)"));
        let custom = RoleInfo {
            role: Role::new("translator").unwrap(),
            description: "translate text".into(),
        };
        assert!(worker_system(&custom).contains("you translate text"));
    }
}
