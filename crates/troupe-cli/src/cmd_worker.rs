//! `troupe worker`: a process of workers of one role on a shared bus; and
//! `troupe workers` / `troupe dlq`, which look at what that bus holds.

use anyhow::{Context as _, bail};
use troupe::core::MessageId;
use troupe::core::bus::unsupported;
use troupe::core::role::{BuiltinRole, RoleInfo};
use troupe::worker::WorkerService;

use crate::backend::{self, Llms};
use crate::cli::{BusArgs, DlqArgs, DlqRequeueArgs, WorkerArgs};
use crate::cmd_run::stop_requested;
use crate::cmd_serve;
use crate::settings::Settings;

/// Runs workers of `--role` until Ctrl-C or SIGTERM; the subtasks in hand
/// then get `workers.shutdown_grace` to finish and the rest go back to the bus.
pub(crate) async fn worker(args: WorkerArgs, settings: Settings) -> anyhow::Result<i32> {
    let Some(role) = BuiltinRole::ALL
        .into_iter()
        .find(|r| r.name() == args.role.trim())
    else {
        let names: Vec<&str> = BuiltinRole::ALL.iter().map(|r| r.name()).collect();
        bail!(
            "unknown role {:?}: use one of {}",
            args.role,
            names.join(", ")
        );
    };
    if backend::bus_is_local(&settings) {
        bail!(
            "a worker process needs a shared bus: pass --bus redis://HOST:PORT (the memory bus lives inside one process)"
        );
    }
    let concurrency = args
        .concurrency
        .unwrap_or(settings.runtime().workers.concurrency);
    if concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let bus = backend::bus(&settings).await?;
    let llms = Llms::start(&settings).await?;
    let config = llms.config(&settings);
    let metrics = cmd_serve::expose_metrics(args.metrics_addr.as_deref()).await?;
    let (primary, fallbacks) = llms.providers();
    let worker = WorkerService::builtin_worker(role, primary, fallbacks, &config)?;
    let service =
        WorkerService::start(bus, RoleInfo::from(role), worker, &config, concurrency).await?;
    eprintln!(
        "troupe: worker {} serving {} ({concurrency} at once)",
        service.agent(),
        role.name()
    );
    stop_requested().await;
    eprintln!("troupe: worker stopping");
    service.shutdown().await;
    llms.stop().await;
    if let Some(server) = metrics {
        server.stop().await;
    }
    Ok(0)
}

/// Prints the live workers of the bus's registry.
pub(crate) async fn workers(args: BusArgs, settings: Settings) -> anyhow::Result<i32> {
    let bus = backend::bus(&settings).await?;
    let registry = bus
        .worker_registry()
        .ok_or_else(|| unsupported(bus.as_ref(), "worker registry"))?;
    let mut workers = registry
        .workers()
        .await
        .context("cannot read the worker registry")?;
    workers.sort_by(|a, b| a.role.cmp(&b.role).then(a.agent.cmp(&b.agent)));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&workers)?);
        return Ok(0);
    }
    if workers.is_empty() {
        println!("no live workers");
        return Ok(0);
    }
    println!(
        "{:<12} {:>4}/{:<4} {:<8} {:<20} {:<24} AGENT",
        "ROLE", "BUSY", "MAX", "PID", "HOST", "LAST SEEN"
    );
    for w in &workers {
        println!(
            "{:<12} {:>4}/{:<4} {:<8} {:<20} {:<24} {}",
            w.role,
            w.busy,
            w.concurrency,
            w.pid,
            w.host,
            w.last_seen.format("%Y-%m-%d %H:%M:%S%.3f"),
            w.agent
        );
    }
    Ok(0)
}

/// Lists a topic's dead letters.
pub(crate) async fn dlq_list(args: DlqArgs, settings: Settings) -> anyhow::Result<i32> {
    let bus = backend::bus(&settings).await?;
    let dead = bus
        .dead_letters()
        .ok_or_else(|| unsupported(bus.as_ref(), "dead letters"))?
        .list(&args.topic)
        .await
        .with_context(|| format!("cannot read the dead letters of {}", args.topic))?;
    if args.bus.json {
        println!("{}", serde_json::to_string_pretty(&dead)?);
        return Ok(0);
    }
    if dead.is_empty() {
        println!("no dead letters on {}", args.topic);
        return Ok(0);
    }
    for d in &dead {
        let subtask = d
            .envelope
            .subtask_id
            .as_ref()
            .map_or_else(String::new, |s| format!(" subtask {s}"));
        let task = d
            .envelope
            .task_id
            .map_or_else(String::new, |t| format!(" task {t}"));
        println!(
            "{} {} {}{task}{subtask} group {} after {} deliveries: {}",
            d.at.format("%Y-%m-%d %H:%M:%S"),
            d.envelope.id,
            d.envelope.kind,
            d.group,
            d.deliveries,
            d.reason
        );
    }
    Ok(0)
}

/// Puts dead letters back on their topic.
pub(crate) async fn dlq_requeue(args: DlqRequeueArgs, settings: Settings) -> anyhow::Result<i32> {
    let ids = args
        .ids
        .iter()
        .map(|id| {
            serde_json::from_value::<MessageId>(serde_json::Value::String(id.trim().to_owned()))
                .map_err(|_| anyhow::anyhow!("{id:?} is not a message id"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bus = backend::bus(&settings).await?;
    let topic = &args.dlq.topic;
    let n = bus
        .dead_letters()
        .ok_or_else(|| unsupported(bus.as_ref(), "dead letters"))?
        .requeue(topic, (!ids.is_empty()).then_some(ids.as_slice()))
        .await
        .with_context(|| format!("cannot requeue the dead letters of {topic}"))?;
    println!("{n} dead letter(s) put back on {topic}");
    Ok(0)
}
