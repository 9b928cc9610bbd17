//! Distributed: the orchestrator in this process, the workers in others,
//! talking over Redis and sharing a PostgreSQL store.
//!
//! The binary runs itself again as `worker ROLE` for each role the mock
//! LLM's plan uses (researcher, analyst, writer); each child serves its role
//! with a `WorkerService` until its stdin closes. This process builds a
//! `Troupe` that hosts no workers, runs one goal, and checks that every
//! subtask was done by an agent of a child (the bus's worker registry tells
//! which process each agent runs in). The bus uses a key prefix of its own,
//! so the example can share a Redis with tests and other deployments.
//!
//! It needs Redis and PostgreSQL (`scripts/services.sh` starts both), at
//! `TROUPE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`) and
//! `TROUPE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! When one cannot be reached it says so on stderr and exits 0, unless `CI`
//! is `true`. Run with `cargo run -p example-distributed`.
//!
//! `src/workers.rs` is the worker side: the child's loop, and the handle
//! that starts the children and stops them (or kills them, when dropped).

// An example program prints its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod workers;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use troupe::core::bus::{Bus, BusError};
use troupe::core::role::BuiltinRole;
use troupe::core::store::{StoreError, Stores};
use troupe::core::task::TaskStatus;
use troupe::{Troupe, TroupeConfig};
use troupe_llm::mock::MockLlm;
use troupe_redis::{RedisBus, RedisBusConfig};

use crate::workers::Workers;

/// The roles of the built-in mock plan, one worker process each.
const ROLES: [BuiltinRole; 3] = [
    BuiltinRole::Researcher,
    BuiltinRole::Analyst,
    BuiltinRole::Writer,
];
/// Hands the bus's key prefix to the worker processes.
const PREFIX_VAR: &str = "EXAMPLE_DISTRIBUTED_KEY_PREFIX";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => coordinator().await,
        [cmd, role] if cmd == "worker" => workers::serve(role).await,
        _ => bail!("usage: example-distributed [worker ROLE]"),
    }
}

async fn coordinator() -> anyhow::Result<()> {
    let prefix = format!("troupe-example:{}:", uuid::Uuid::new_v4().simple());
    let Some((bus, stores)) = connect(&prefix).await? else {
        return Ok(());
    };
    let workers = Workers::spawn(&prefix)?;
    // Each child registers just after joining its role's consumer group.
    let registry = bus
        .worker_registry()
        .context("a Redis bus has a registry")?;
    let mut pid_of = HashMap::new();
    for _ in 0..100 {
        let live = registry.workers().await?;
        pid_of = live.into_iter().map(|w| (w.agent, w.pid)).collect();
        if pid_of.len() == ROLES.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        pid_of.len() == ROLES.len(),
        "not every worker started: {pid_of:?}"
    );

    let mut config = TroupeConfig::default();
    // Drive only our own task: leave tasks others abandoned in the shared store alone.
    config.coordinator.takeover = false;
    let troupe = Troupe::builder()
        .llm(MockLlm::builtin())
        .config(config)
        .bus(bus)
        .stores(stores)
        .host_workers(false)
        .build()
        .await?;
    let outcome = troupe.run("Compare three message brokers").await;
    troupe.shutdown().await;
    let task = outcome?;
    ensure!(task.status == TaskStatus::Completed, "task {}", task.status);
    for s in &task.subtasks {
        let found = s.agent.as_ref().and_then(|a| Some((a, pid_of.get(a)?)));
        let Some((agent, pid)) = found.filter(|(_, pid)| workers.pids.contains(pid)) else {
            bail!("{} was not done by a worker process ({:?})", s.id, s.agent);
        };
        println!("{} ({}) done by {agent} in process {pid}", s.id, s.role);
    }
    workers.stop().await?;
    delete_keys(&prefix).await?;
    println!(
        "task {} completed by {} worker processes",
        task.id,
        ROLES.len()
    );
    Ok(())
}

/// The bus and the stores; `None` (skipped) when one is down, outside CI.
async fn connect(prefix: &str) -> anyhow::Result<Option<(RedisBus, Stores)>> {
    let postgres_url = std::env::var("TROUPE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let bus = redis_bus(prefix).await;
    let stores = troupe_sql::open_url(&postgres_url).await;
    let down = match (&bus, &stores) {
        (Err(e @ BusError::Unavailable(_)), _) => e.to_string(),
        (_, Err(e @ StoreError::Unavailable(_))) => e.to_string(),
        _ => return Ok(Some((bus?, stores?))),
    };
    let hint = "scripts/services.sh starts Redis and PostgreSQL";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        bail!("{down}; CI needs both ({hint})");
    }
    eprintln!("example-distributed skipped: {down} ({hint})");
    Ok(None)
}

/// The Redis bus, with every key under `prefix`.
async fn redis_bus(prefix: &str) -> Result<RedisBus, BusError> {
    let config = RedisBusConfig {
        key_prefix: prefix.to_owned(),
        ..RedisBusConfig::default()
    };
    RedisBus::connect(&redis_url(), config).await
}

/// Deletes the keys under `prefix`: streams outlive their consumers, and
/// the bus has no call to remove them.
async fn delete_keys(prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(())
}

fn redis_url() -> String {
    std::env::var("TROUPE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}
