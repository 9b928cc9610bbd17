//! `troupe run`: one goal, to its end, in this process.

use std::time::Instant;

use futures::StreamExt as _;
use troupe::core::task::TaskStatus;

use crate::backend::{self, Llms};
use crate::cli::RunArgs;
use crate::cmd_serve;
use crate::live::Live;
use crate::settings::Settings;

/// Exit code when the task did not complete.
pub(crate) const EXIT_NOT_COMPLETED: i32 = 1;
/// Exit code when interrupted (Ctrl-C).
pub(crate) const EXIT_INTERRUPTED: i32 = 130;

pub(crate) async fn run(args: RunArgs, settings: Settings) -> anyhow::Result<i32> {
    let bus = backend::bus(&settings).await?;
    let host_workers = backend::bus_is_local(&settings) || args.workers;
    // The LLM first: a missing key or model should not leave an empty database behind.
    let llms = Llms::start(&settings).await?;
    let stores = backend::stores(settings.store_url(), &settings).await?;
    let mut config = llms.config(&settings);
    // One goal (or one benchmark) in this process: leave other coordinators' tasks alone.
    config.coordinator.takeover = false;
    let metrics = cmd_serve::expose_metrics(args.metrics_addr.as_deref()).await?;
    let troupe = llms.runtime(bus, stores, config, host_workers).await?;

    let started = Instant::now();
    let handle = troupe.submit(args.goal).await?;
    let id = handle.id();
    let mut events = handle.events();
    let mut following = true;
    let mut live = Live::new(!args.json);
    let mut interrupted = false;
    let done = handle.wait();
    tokio::pin!(done);
    let record = loop {
        tokio::select! {
            record = &mut done => break record?,
            event = events.next(), if following => match event {
                Some(Ok(entry)) => live.show(id, &entry),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "could not follow the task's progress");
                    following = false;
                }
                None => following = false,
            },
            () = stop_requested(), if !interrupted => {
                interrupted = true;
                troupe.cancel(id);
            }
        }
    };
    live.finish();
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    // The task has ended: whatever its workers still hold is of no use.
    troupe.shutdown_now().await;
    llms.stop().await;
    if let Some(server) = metrics {
        server.stop().await;
    }

    if args.json {
        print_json(&record.document(elapsed_ms))?;
    } else if let Some(answer) = &record.result {
        println!("{answer}");
    }
    let seconds = elapsed_ms as f64 / 1000.0;
    match record.status {
        TaskStatus::Completed => {
            if !args.json {
                eprintln!(
                    "task {id} completed in {seconds:.1}s ({} tokens)",
                    record.usage.total()
                );
            }
            Ok(0)
        }
        status => {
            let reason = record.error.as_deref().unwrap_or("no reason recorded");
            eprintln!("task {id} {status}: {reason}");
            Ok(if interrupted {
                EXIT_INTERRUPTED
            } else {
                EXIT_NOT_COMPLETED
            })
        }
    }
}

/// Ctrl-C, or SIGTERM (what service managers and `kill` send).
pub(crate) async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
