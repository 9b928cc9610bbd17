//! A workflow of your own built on Troupe, written to be tested: summaries of
//! a text by a `counter` worker of yours (plain Rust) and the built-in
//! `writer` (an LLM).
//!
//! The runtime is built from an LLM the caller passes in, so a test passes
//! a scripted `troupe_llm::mock::MockLlm` and decides what "the model" says:
//! the plan, a worker's reply, an error. `tests/summarise.rs` shows how;
//! `src/main.rs` runs the same scenario. Run the tests with
//! `cargo nextest run -p example-testing` (or `cargo test`).

use anyhow::{Context as _, ensure};
use troupe::core::llm::LlmProvider;
use troupe::core::role::BuiltinRole;
use troupe::core::task::TaskStatus;
use troupe::worker::{WorkError, WorkOutput};
use troupe::{Troupe, TroupeConfig};

/// The role of the worker that counts the text's words and sentences.
pub const COUNTER: &str = "counter";

/// A runtime for summaries on `llm`: the built-in writer, and a `counter`
/// worker that needs no LLM.
pub async fn summariser(
    llm: impl LlmProvider + 'static,
    config: TroupeConfig,
) -> anyhow::Result<Troupe> {
    let troupe = Troupe::builder()
        .llm(llm)
        .config(config)
        .builtin_roles([BuiltinRole::Writer])
        .worker_fn(
            COUNTER,
            "counts the words and sentences of the text to summarise",
            |job, ctx| async move {
                let text = text_of(&job.goal);
                if text.trim().is_empty() {
                    return Err(WorkError::permanent("the goal holds no text to count"));
                }
                ctx.progress("counting").await;
                let words = text.split_whitespace().count();
                let sentences = text.matches(['.', '!', '?']).count().max(1);
                Ok(WorkOutput::text(format!(
                    "{words} words in {sentences} sentences"
                )))
            },
        )
        .build()
        .await?;
    Ok(troupe)
}

/// The goal that asks for a summary of `text`.
pub fn goal(text: &str) -> String {
    format!("Summarise this text in one sentence.\n\n{text}")
}

/// The text a [`goal`] asks to summarise.
fn text_of(goal: &str) -> &str {
    goal.split_once("\n\n").map_or("", |(_, text)| text)
}

/// Summarises `text`: the task's final answer, or why there is none.
pub async fn summarise(troupe: &Troupe, text: &str) -> anyhow::Result<String> {
    let task = troupe.run(goal(text)).await?;
    ensure!(
        task.status == TaskStatus::Completed,
        "the summary {}: {}",
        task.status,
        task.error.as_deref().unwrap_or("no reason given")
    );
    task.result.context("a completed task has an answer")
}
