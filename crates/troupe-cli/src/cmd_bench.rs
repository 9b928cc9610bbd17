//! `troupe bench`: whole tasks (plan, subtasks, synthesis) through the real
//! runtime, with throughput and latency percentiles printed as JSON.
//!
//! Latency is from `submit` to the task's end as seen by the caller; throughput
//! is the measured tasks over the wall time of the measured phase. Warm-up
//! tasks run first and are not counted.
//!
//! The report also says how often the LLM's first plan was valid and how often
//! a valid plan came after repair (read from the measured tasks' progress
//! ledgers), and the tokens spent: with a real model (`--llm local`) these are
//! the structured-output success rates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use troupe::Troupe;
use troupe::core::TaskId;
use troupe::core::ledger::{EventKind, ProgressEntry};
use troupe::core::task::{TaskStatus, Usage};

use crate::backend::{self, Llms};
use crate::cli::BenchArgs;
use crate::cmd_serve;
use crate::settings::Settings;

#[derive(Debug, Serialize)]
struct Report {
    tasks: usize,
    concurrency: usize,
    completed: usize,
    failed: usize,
    elapsed_ms: f64,
    tasks_per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    llm: String,
    store: String,
    bus: String,
    plans: PlanStats,
    usage: Usage,
}

/// How planning went for the measured tasks (their first plan, not re-plans).
#[derive(Debug, Default, Serialize)]
struct PlanStats {
    /// Replies the LLM gave to planning requests.
    replies: usize,
    /// Tasks whose first planning reply was a valid plan.
    first_reply_valid: usize,
    /// Tasks that got a valid plan, on the first reply or after repair.
    valid_after_repair: usize,
    /// `first_reply_valid` over the measured tasks.
    first_reply_valid_rate: f64,
    /// `valid_after_repair` over the measured tasks.
    valid_after_repair_rate: f64,
}

impl PlanStats {
    fn add(&mut self, entries: &[ProgressEntry]) {
        let mut rejected = 0;
        for e in entries {
            match e.event {
                EventKind::PlanRejected => rejected += 1,
                EventKind::PlanAccepted => {
                    self.replies += rejected + 1;
                    self.valid_after_repair += 1;
                    if rejected == 0 {
                        self.first_reply_valid += 1;
                    }
                    return;
                }
                _ => {}
            }
        }
        self.replies += rejected;
    }

    fn finish(&mut self, tasks: usize) {
        let share = |n: usize| round(n as f64 / tasks.max(1) as f64);
        self.first_reply_valid_rate = share(self.first_reply_valid);
        self.valid_after_repair_rate = share(self.valid_after_repair);
    }
}

/// Goals the tasks cycle through, so that a real model plans varied work.
const GOALS: &[&str] = &[
    "Write a short sales report from these quarterly figures: Q1 120 units, Q2 150 units, Q3 90 units, Q4 170 units",
    "Review this function for security bugs: fn login(user: &str) { db.query(format!(\"SELECT * FROM users WHERE name = '{user}'\")) }",
    "Explain the difference between a mutex and a semaphore to a junior developer, with an example",
    "Write a Python function that checks whether a string is a palindrome, and test it",
    "Summarise the pros and cons of remote work for a small company",
    "Plan a three-day trip to Lisbon for two people on a moderate budget",
    "Compare PostgreSQL and SQLite for a small web application and recommend one",
    "Draft a polite email asking a customer to pay an overdue invoice",
];

pub(crate) async fn bench(args: BenchArgs, mut settings: Settings) -> anyhow::Result<i32> {
    if args.tasks == 0 || args.concurrency == 0 {
        bail!("--tasks and --concurrency must be at least 1");
    }
    // A benchmark measures Troupe, not a model: the mock unless told otherwise.
    settings
        .backend
        .llm
        .get_or_insert_with(|| "mock".to_owned());
    let llms = Llms::start(&settings).await?;
    let mut config = llms.config(&settings);
    // One goal (or one benchmark) in this process: leave other coordinators' tasks alone.
    config.coordinator.takeover = false;
    let bus = backend::bus(&settings).await?;
    let host_workers = backend::bus_is_local(&settings) || args.workers;
    let scratch = tempfile::tempdir()?;
    let (store_url, store_label) = match &settings.backend.store {
        Some(url) => (url.clone(), url.clone()),
        None => {
            let path = scratch.path().join("bench.db");
            (
                format!("sqlite://{}", path.display()),
                "sqlite (a fresh temporary file)".to_owned(),
            )
        }
    };
    let stores = backend::stores(&store_url, &settings).await?;
    let bus_label = bus.name().to_owned();
    let metrics = cmd_serve::expose_metrics(args.metrics_addr.as_deref()).await?;
    let troupe = llms.runtime(bus, stores, config, host_workers).await?;

    let warmup = args.warmup.unwrap_or((args.tasks / 10).min(500));
    if warmup > 0 {
        run_batch(&troupe, warmup, args.concurrency).await?;
    }
    let started = Instant::now();
    let latencies = run_batch(&troupe, args.tasks, args.concurrency).await?;
    let elapsed = started.elapsed();
    let mut plans = PlanStats::default();
    let mut usage = Usage::default();
    for (_, id, _, spent) in &latencies {
        plans.add(&troupe.progress(*id).await?);
        usage += *spent;
    }
    plans.finish(args.tasks);
    troupe.shutdown().await;
    llms.stop().await;
    if let Some(server) = metrics {
        server.stop().await;
    }

    let completed = latencies.iter().filter(|(_, _, ok, _)| *ok).count();
    let mut ms: Vec<f64> = latencies
        .iter()
        .map(|(d, ..)| d.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let report = Report {
        tasks: args.tasks,
        concurrency: args.concurrency,
        completed,
        failed: args.tasks - completed,
        elapsed_ms: round(elapsed.as_secs_f64() * 1000.0),
        tasks_per_sec: round(args.tasks as f64 / elapsed.as_secs_f64()),
        p50_ms: round(percentile(&ms, 0.50)),
        p90_ms: round(percentile(&ms, 0.90)),
        p99_ms: round(percentile(&ms, 0.99)),
        max_ms: round(ms.last().copied().unwrap_or(0.0)),
        llm: settings.backend.llm.clone().unwrap_or_default(),
        store: store_label,
        bus: bus_label,
        plans,
        usage,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if report.failed == 0 { 0 } else { 1 })
}

/// One finished task: its latency, id, whether it completed, and its tokens.
type Finished = (Duration, TaskId, bool, Usage);

/// Runs `n` tasks with at most `concurrency` in flight.
async fn run_batch(troupe: &Troupe, n: usize, concurrency: usize) -> anyhow::Result<Vec<Finished>> {
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut running = JoinSet::new();
    for i in 0..n {
        let permit = slots.clone().acquire_owned().await?;
        let troupe = troupe.clone();
        running.spawn(async move {
            let t0 = Instant::now();
            let goal = GOALS[i % GOALS.len()];
            let outcome = match troupe.submit(goal).await {
                Ok(handle) => {
                    let id = handle.id();
                    handle
                        .wait()
                        .await
                        .map(|r| (id, r.status == TaskStatus::Completed, r.usage))
                }
                Err(e) => Err(e),
            };
            drop(permit);
            (t0.elapsed(), outcome)
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(joined) = running.join_next().await {
        let (latency, outcome) = joined?;
        let (id, ok, usage) = outcome?;
        out.push((latency, id, ok, usage));
    }
    Ok(out)
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
