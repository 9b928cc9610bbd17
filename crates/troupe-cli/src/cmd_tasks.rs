//! `troupe tasks list` and `troupe tasks show`.

use std::fmt::Write as _;

use anyhow::Context as _;
use troupe::core::TaskId;
use troupe::core::ledger::{Ledgers, ProgressEntry, usage_by_agent};
use troupe::core::store::TaskQuery;
use troupe::core::task::{TaskRecord, TaskStatus};

use crate::backend;
use crate::cli::{ListArgs, ShowArgs};
use crate::settings::Settings;

pub(crate) async fn list(args: ListArgs, settings: Settings) -> anyhow::Result<i32> {
    let status = args
        .status
        .as_deref()
        .map(|s| s.parse::<TaskStatus>())
        .transpose()
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}; use one of pending, planning, running, completed, failed, cancelled"
            )
        })?;
    let before = args
        .before
        .as_deref()
        .map(str::parse::<TaskId>)
        .transpose()?;
    let stores = backend::existing_stores(&settings).await?;
    let tasks = stores
        .tasks
        .list_tasks(&TaskQuery {
            status,
            before,
            limit: args.limit,
        })
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(0);
    }
    if tasks.is_empty() {
        eprintln!("no tasks");
        return Ok(0);
    }
    println!(
        "{:<36}  {:<9}  {:>8}  {:<19}  GOAL",
        "ID", "STATUS", "SUBTASKS", "CREATED (UTC)"
    );
    for t in tasks {
        let goal: String = t.goal.replace('\n', " ").chars().take(60).collect();
        let subtasks = format!("{}/{}", t.subtasks_completed, t.subtasks_total);
        let created = t.created_at.format("%Y-%m-%d %H:%M:%S");
        println!(
            "{:<36}  {:<9}  {subtasks:>8}  {created}  {goal}",
            t.id.to_string(),
            t.status.as_str()
        );
    }
    Ok(0)
}

pub(crate) async fn show(args: ShowArgs, settings: Settings) -> anyhow::Result<i32> {
    let url = settings.store_url();
    let id: TaskId = args.id.parse()?;
    let stores = backend::existing_stores(&settings).await?;
    let task = stores
        .tasks
        .get_task(id)
        .await?
        .with_context(|| format!("no task {id} in {}", troupe::core::redact_url(url)))?;
    let mut progress = Vec::new();
    loop {
        let after = progress.last().map_or(0, |e: &ProgressEntry| e.step);
        let page = stores.progress.entries(id, after, 1_000).await?;
        let more = page.len() == 1_000;
        progress.extend(page);
        if !more {
            break;
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Ledgers::new(task, progress))?
        );
    } else {
        print!("{}", render(&task, &progress));
    }
    Ok(0)
}

fn render(task: &TaskRecord, progress: &[ProgressEntry]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Task {}  [{}]", task.id, task.status);
    let _ = writeln!(out, "Goal: {}", task.goal);
    let _ = writeln!(
        out,
        "Created {}  elapsed {:.1}s  plan revision {}  tokens {} in / {} out",
        task.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        task.elapsed_ms() as f64 / 1000.0,
        task.plan_revision,
        task.usage.prompt_tokens,
        task.usage.completion_tokens
    );
    if !task.facts.is_empty() {
        let _ = writeln!(out, "\nFacts:");
        for f in &task.facts {
            let _ = writeln!(out, "  - {f}");
        }
    }
    let _ = writeln!(out, "\nSubtasks:");
    let _ = writeln!(
        out,
        "  {:<12} {:<11} {:<11} {:>3}  {:<8}  AGENT",
        "ID", "ROLE", "STATUS", "TRY", "AFTER"
    );
    for s in &task.subtasks {
        let deps: Vec<&str> = s.depends_on.iter().map(|d| d.as_str()).collect();
        let agent = s.agent.as_ref().map_or("-", |a| a.as_str());
        let deps = if deps.is_empty() {
            "-".to_owned()
        } else {
            deps.join(",")
        };
        let _ = writeln!(
            out,
            "  {:<12} {:<11} {:<11} {:>3}  {deps:<8}  {agent}",
            s.id.as_str(),
            s.role.as_str(),
            s.status.as_str(),
            s.attempts
        );
    }
    let by_agent = usage_by_agent(progress);
    if !by_agent.is_empty() {
        let _ = writeln!(out, "\nTokens by agent:");
        for (agent, u) in &by_agent {
            let _ = writeln!(
                out,
                "  {:<34} {:>8} in  {:>8} out",
                agent.as_str(),
                u.prompt_tokens,
                u.completion_tokens
            );
        }
    }
    let _ = writeln!(out, "\nProgress ledger:");
    for e in progress {
        let subject = match (&e.subtask_id, e.attempt) {
            (Some(s), Some(a)) => format!("{s}#{a}"),
            (Some(s), None) => s.to_string(),
            _ => "-".to_owned(),
        };
        let detail: String = e.detail.replace('\n', " ").chars().take(120).collect();
        let _ = writeln!(
            out,
            "  {:>4}  {}  {:<34}  {:<8}  {:<18}  {detail}",
            e.step,
            e.at.format("%H:%M:%S%.3f"),
            e.agent.as_str(),
            subject,
            e.event.as_str()
        );
    }
    match (&task.result, &task.error) {
        (Some(result), _) => {
            let _ = writeln!(out, "\nResult:\n{result}");
        }
        (None, Some(error)) => {
            let _ = writeln!(out, "\nError: {error}");
        }
        (None, None) => {}
    }
    out
}
