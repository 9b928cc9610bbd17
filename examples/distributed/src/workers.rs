//! The worker side: a child process serving one role (`worker ROLE`), and
//! [`Workers`], which the coordinator holds to start and stop the children.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use tokio::process::{Child, Command};
use troupe::TroupeConfig;
use troupe::core::role::BuiltinRole;
use troupe::worker::WorkerService;
use troupe_llm::mock::MockLlm;

use crate::{PREFIX_VAR, ROLES, redis_bus};

/// Serves `role` until stdin closes (the coordinator stops us, or died).
pub(crate) async fn serve(role: &str) -> anyhow::Result<()> {
    let role = ROLES
        .into_iter()
        .find(|r| r.name() == role)
        .context("unknown role")?;
    let prefix = std::env::var(PREFIX_VAR).with_context(|| format!("{PREFIX_VAR} is not set"))?;
    let bus = Arc::new(redis_bus(&prefix).await?);
    let config = TroupeConfig::default();
    let llm = Arc::new(MockLlm::builtin());
    let worker = WorkerService::builtin_worker(role, llm, Vec::new(), &config)?;
    let service = WorkerService::start(bus, role.into(), worker, &config, 4).await?;
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
        .await??;
    service.shutdown().await;
    Ok(())
}

/// The worker processes. Each is killed when dropped (`kill_on_drop`), so
/// that none outlives a coordinator that failed half-way.
pub(crate) struct Workers {
    children: Vec<Child>,
    /// Their process ids.
    pub(crate) pids: Vec<u32>,
}

impl Workers {
    /// Starts one per role of [`ROLES`], on the bus keys under `prefix`.
    pub(crate) fn spawn(prefix: &str) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let spawn = |role: BuiltinRole| {
            Command::new(&exe)
                .args(["worker", role.name()])
                .env(PREFIX_VAR, prefix)
                .stdin(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
        };
        let children: Vec<Child> = ROLES.into_iter().map(spawn).collect::<Result<_, _>>()?;
        let pids = children.iter().filter_map(Child::id).collect();
        Ok(Workers { children, pids })
    }

    /// Asks every worker to stop (closes its stdin) and waits for it to exit.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        for child in &mut self.children {
            let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
            ensure!(status.success(), "a worker process ended with {status}");
        }
        Ok(())
    }
}
