//! Your own model behind Troupe: implement `LlmProvider` for a type and pass
//! it to `Troupe::builder().llm(...)`.
//!
//! `RuleModel` is no language model at all, only a few rules, but it answers
//! every call a task makes: plan requests (`CallKind::Plan`, with a JSON
//! schema in `response_format`) with a valid plan for the built-in roles,
//! a worker's request with a short text, and the synthesis with a summary of
//! the results in its prompt. A real provider would send the messages to an
//! API instead; retries, timeouts and rate limits are layered around it by
//! Troupe. Run with `cargo run -p example-custom-llm`.

// An example program prints its output.
#![allow(clippy::print_stdout)]

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::ensure;
use async_trait::async_trait;
use serde_json::json;
use troupe::Troupe;
use troupe::core::llm::{CallKind, ChatRequest, ChatResponse, LlmError, LlmProvider};
use troupe::core::task::{TaskStatus, Usage};

/// A rule-based stand-in for a model, counting the calls of each kind.
#[derive(Default)]
struct RuleModel {
    calls: Mutex<Vec<CallKind>>,
}

#[async_trait]
impl LlmProvider for RuleModel {
    fn name(&self) -> &str {
        "rules"
    }

    fn model(&self) -> Option<&str> {
        Some("rules-v1")
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let kind = request.meta.kind;
        // A plain Vec behind a lock: a panic cannot leave it half-written.
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(kind);
        let prompt = request.last_user_message().unwrap_or_default();
        let goal = labelled(prompt, "Goal:")
            .or_else(|| labelled(prompt, "Goal of the whole team:"))
            .unwrap_or("the goal");
        let content = match kind {
            // The plan's JSON (`troupe::core::plan::PlanDraft` as a type). A
            // re-plan needs fresh subtask ids: they carry its revision.
            CallKind::Plan | CallKind::Replan => {
                let id = |n: u32| match request.meta.revision {
                    0 => format!("s{n}"),
                    r => format!("r{r}s{n}"),
                };
                json!({
                    "facts": [format!("The goal is: {goal}")],
                    "subtasks": [
                        {"id": id(1), "role": "researcher", "title": "Find the facts",
                         "instruction": format!("List three facts about: {goal}")},
                        {"id": id(2), "role": "writer", "title": "Write it up",
                         "instruction": format!("Write a short answer to: {goal}"),
                         "depends_on": [id(1)]}
                    ]
                })
                .to_string()
            }
            CallKind::Work => match request.meta.role.as_ref().map(|r| r.as_str()) {
                Some("researcher") => format!("Three facts about \"{goal}\": a, b and c."),
                _ => format!(
                    "\"{goal}\", answered in short from {} earlier result(s).",
                    sections(prompt)
                ),
            },
            CallKind::Synthesize => {
                format!("Summary of {} results for \"{goal}\".", sections(prompt))
            }
            CallKind::Evaluate | CallKind::Other => {
                return Err(LlmError::BadRequest {
                    status: 400,
                    body: format!("rules-v1 has no rule for {} calls", kind.as_str()),
                });
            }
        };
        Ok(ChatResponse {
            content,
            // A real provider reports the tokens its API counted.
            usage: Usage::default(),
            model: "rules-v1".to_owned(),
            finish_reason: Some("stop".to_owned()),
        })
    }
}

/// The rest of the first line of `text` that starts with `label`.
fn labelled<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
}

/// How many results (`### id (role)` sections) a prompt holds.
fn sections(prompt: &str) -> usize {
    prompt.lines().filter(|l| l.starts_with("### ")).count()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // An Arc, to look at the model afterwards: `Arc<M>` is an `LlmProvider` too.
    let model = Arc::new(RuleModel::default());
    let troupe = Troupe::builder().llm(model.clone()).build().await?;
    let task = troupe.run("Explain why the sky is blue").await?;
    troupe.shutdown().await;

    for s in &task.subtasks {
        println!(
            "{} ({}): {}",
            s.id,
            s.role,
            s.result.as_deref().unwrap_or("-")
        );
    }
    println!("\nanswer: {}", task.result.as_deref().unwrap_or("(none)"));
    ensure!(
        task.status == TaskStatus::Completed,
        "the task ended {}",
        task.status
    );
    ensure!(
        task.subtasks.len() == 2,
        "the plan had {} subtasks",
        task.subtasks.len()
    );
    ensure!(
        task.result.as_deref() == Some("Summary of 2 results for \"Explain why the sky is blue\"."),
        "the answer is not the model's summary: {:?}",
        task.result
    );
    let calls = model
        .calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let count = |k: CallKind| calls.iter().filter(|c| **c == k).count();
    ensure!(
        (
            count(CallKind::Plan),
            count(CallKind::Work),
            count(CallKind::Synthesize)
        ) == (1, 2, 1),
        "unexpected calls: {calls:?}"
    );
    println!("\ncompleted with rules-v1 in {} calls", calls.len());
    Ok(())
}
