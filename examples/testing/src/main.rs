//! Runs the summary workflow of `src/lib.rs` once, with a scripted mock LLM
//! as its tests do (`tests/summarise.rs`): the plan is scripted, the writer's
//! first call fails with HTTP 503 and is retried, and every call is recorded
//! to check what the writer was sent. Run with `cargo run -p example-testing`;
//! its tests with `cargo nextest run -p example-testing`.

// An example program prints its output.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use anyhow::ensure;
use example_testing::{summarise, summariser};
use serde_json::json;
use troupe::TroupeConfig;
use troupe::core::llm::CallKind;
use troupe_llm::mock::{MockError, MockLlm, Rule};

const TEXT: &str = "Rust is a systems language. It is fast and memory safe. Many teams adopt it.";
const SUMMARY: &str = "Rust is a fast, memory-safe systems language that many teams adopt.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let plan = json!({
        "subtasks": [
            {"id": "count", "role": "counter", "instruction": "Count the words and sentences."},
            {"id": "summary", "role": "writer", "instruction": "Summarise the text in one sentence.",
             "depends_on": ["count"]}
        ]
    });
    let llm = Arc::new(
        MockLlm::builder()
            .rule(Rule::on(CallKind::Plan).plan(plan))
            // An overloaded provider, once: the call is retried after a backoff.
            .rule(
                Rule::on(CallKind::Work)
                    .role("writer")
                    .error(MockError::http(503))
                    .times(1),
            )
            .rule(Rule::on(CallKind::Work).role("writer").reply(SUMMARY))
            .record()
            .build()?,
    );
    let troupe = summariser(llm.clone(), TroupeConfig::default()).await?;
    let summary = summarise(&troupe, TEXT).await;
    troupe.shutdown().await;
    let summary = summary?;
    println!("{summary}\n");

    // Every call was recorded: the request sent, and what came back.
    let writer: Vec<_> = llm
        .calls()
        .into_iter()
        .filter(|c| c.meta().role.as_ref().map(|r| r.as_str()) == Some("writer"))
        .collect();
    for call in &writer {
        println!(
            "writer call: {:?}",
            call.outcome.as_ref().map(|_| "answered")
        );
    }
    ensure!(
        summary.contains(SUMMARY),
        "the answer lacks the writer's summary"
    );
    ensure!(
        writer.len() == 2 && writer[0].outcome == Err("server") && writer[1].outcome.is_ok(),
        "the writer's 503 was not retried once"
    );
    let prompt = writer[1].request.last_user_message().unwrap_or_default();
    ensure!(
        prompt.contains("15 words in 3 sentences"),
        "the writer was not sent the counter's result"
    );
    println!("summarised after one retried 503; the writer saw the counter's result");
    Ok(())
}
