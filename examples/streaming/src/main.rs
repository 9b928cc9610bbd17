//! Streaming a task's progress: submit a goal, then read its progress ledger
//! step by step as it is stored, with `TaskHandle::events()`.
//!
//! The stream starts at the task's first step whenever it is opened (nothing
//! stored before is missed) and ends after its last step, so a plain loop is
//! all a reader needs. The `plan_accepted` step carries the plan itself
//! (`StepData::Plan`), for programs that want more than the words of `detail`.
//! A scripted mock LLM stands in for a real model. Run with
//! `cargo run -p example-streaming`.

// An example program prints its output.
#![allow(clippy::print_stdout)]

use anyhow::ensure;
use futures::StreamExt as _;
use troupe::Troupe;
use troupe::core::ledger::{EventKind, StepData};
use troupe::core::task::TaskStatus;
use troupe_llm::mock::MockLlm;

/// The longest detail printed per step.
const SHOWN_CHARS: usize = 60;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The built-in mock plans a researcher and an analyst, then a writer.
    let troupe = Troupe::builder().llm(MockLlm::builtin()).build().await?;
    let task = troupe
        .submit("Compare three note-taking apps for a small team")
        .await?;
    println!("task {}\n", task.id());
    println!("{:>4}  {:<20} {:<8} DETAIL", "STEP", "EVENT", "SUBTASK");

    let mut events = task.events();
    let mut steps = Vec::new();
    let mut planned = Vec::new();
    while let Some(entry) = events.next().await {
        let entry = entry?;
        let subtask = entry.subtask_id.as_ref().map_or("-", |s| s.as_str());
        println!(
            "{:>4}  {:<20} {:<8} {}",
            entry.step,
            entry.event.as_str(),
            subtask,
            shorten(&entry.detail)
        );
        if let (EventKind::PlanAccepted, Some(StepData::Plan { subtasks, .. })) =
            (entry.event, &entry.data)
        {
            for s in subtasks {
                let after: Vec<&str> = s.depends_on.iter().map(|d| d.as_str()).collect();
                let after = if after.is_empty() {
                    String::new()
                } else {
                    format!(", after {}", after.join(" and "))
                };
                println!("{:>36} {} ({}){after}", "planned:", s.id, s.role);
            }
            planned = subtasks.iter().map(|s| s.id.clone()).collect();
        }
        steps.push((entry.step, entry.event, entry.subtask_id));
    }
    let record = task.wait().await?;
    troupe.shutdown().await;

    // What a reader of the stream may count on: every step once, in order,
    // from 1, ending with the task's end.
    let numbers: Vec<u64> = steps.iter().map(|(n, _, _)| *n).collect();
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    ensure!(
        numbers == expected,
        "steps are not gap-free from 1: {numbers:?}"
    );
    ensure!(
        steps.last().map(|(_, e, _)| *e) == Some(EventKind::TaskCompleted),
        "the stream did not end with task_completed"
    );
    ensure!(
        record.status == TaskStatus::Completed,
        "the task ended {}",
        record.status
    );
    // The plan on the plan_accepted step is the plan that ran.
    let ran: Vec<_> = record.subtasks.iter().map(|s| s.id.clone()).collect();
    ensure!(
        !planned.is_empty() && planned == ran,
        "planned {planned:?}, ran {ran:?}"
    );
    for id in &planned {
        ensure!(
            steps
                .iter()
                .any(|(_, e, s)| *e == EventKind::SubtaskCompleted && s.as_ref() == Some(id)),
            "no subtask_completed step for {id}"
        );
    }
    println!(
        "\n{} steps, gap-free, ending with task_completed; {} planned subtasks, all completed",
        numbers.len(),
        planned.len()
    );
    Ok(())
}

/// The first line of `detail`, cut to [`SHOWN_CHARS`].
fn shorten(detail: &str) -> String {
    let line = detail.lines().next().unwrap_or_default();
    if line.chars().count() <= SHOWN_CHARS && !detail.contains('\n') {
        return line.to_owned();
    }
    let cut: String = line.chars().take(SHOWN_CHARS).collect();
    format!("{cut}…")
}
