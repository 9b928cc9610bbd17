//! A user's own worker: a `statistician` role computed in Rust, not by an LLM,
//! working beside the built-in LLM workers in one plan.
//!
//! The planner sees the role and its description; here a scripted mock LLM
//! stands in for a real model and plans a CSV summary with it. Run with
//! `cargo run -p example-custom-worker`.

// An example program prints its output.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use troupe::Troupe;
use troupe::core::Role;
use troupe::core::llm::CallKind;
use troupe::worker::{Job, WorkError, WorkOutput, Worker, WorkerContext};
use troupe_llm::mock::{MockLlm, Rule};

const SALES_CSV: &str = "month,revenue\nJanuary,1200\nFebruary,1350\nMarch,1580\n";

/// Sums and averages the `revenue` column of the CSV among the task's facts.
struct Statistician;

#[async_trait]
impl Worker for Statistician {
    async fn run(&self, job: &Job, ctx: &WorkerContext) -> Result<WorkOutput, WorkError> {
        let csv = job
            .facts
            .iter()
            .find(|f| f.starts_with("month,"))
            .ok_or_else(|| {
                WorkError::permanent("no CSV among the facts; the plan must state the data")
            })?;
        let mut values = Vec::new();
        for (n, line) in csv.lines().skip(1).enumerate() {
            let value = line.rsplit(',').next().unwrap_or_default();
            let value: f64 = value.trim().parse().map_err(|_| {
                WorkError::permanent(format!("line {}: {value:?} is not a number", n + 2))
            })?;
            values.push(value);
        }
        ctx.progress(format!("read {} rows", values.len())).await;
        let total: f64 = values.iter().sum();
        let mean = total / values.len().max(1) as f64;
        Ok(WorkOutput::text(format!(
            "rows: {}, total revenue: {total}, mean: {mean:.2}",
            values.len()
        )))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let plan = json!({
        "facts": [SALES_CSV],
        "subtasks": [
            {"id": "stats", "role": "statistician", "instruction": "Compute total and mean revenue."},
            {"id": "report", "role": "writer", "instruction": "Write a two-line summary.", "depends_on": ["stats"]}
        ]
    });
    let llm = MockLlm::builder()
        .rule(Rule::on(CallKind::Plan).plan(plan))
        .build()?;
    let troupe = Troupe::builder()
        .llm(Arc::new(llm))
        .stores(troupe_sql::open_url("memory").await?)
        .worker(
            Role::new("statistician")?,
            "computes exact statistics over CSV data",
            Statistician,
        )
        .build()
        .await?;
    let task = troupe.run("Summarise the quarter's revenue").await?;
    for s in &task.subtasks {
        println!(
            "{} ({}): {}",
            s.id,
            s.role,
            s.result.as_deref().unwrap_or("-")
        );
    }
    println!("\n{}", task.result.as_deref().unwrap_or("(no answer)"));
    troupe.shutdown().await;
    anyhow::ensure!(
        task.status.as_str() == "completed",
        "the task ended {}",
        task.status
    );
    Ok(())
}
