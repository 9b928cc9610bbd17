//! [`WorkerService`]: a worker of one role serving a shared bus on its own,
//! outside a [`Troupe`](crate::Troupe) (the `troupe worker` process), taking
//! subtasks that coordinators elsewhere publish.
//!
//! The service is one worker agent running up to `concurrency` subtasks at once,
//! with the same loop as the workers a [`Troupe`](crate::Troupe) hosts. While
//! it runs it heartbeats the bus's worker registry, so operators (and
//! `troupe workers`) see who is serving which role and how busy it is; an
//! entry expires when the heartbeats stop. Stopping lets the subtasks in hand
//! finish within `workers.shutdown_grace`, then hands the rest back to the bus.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use troupe_core::AgentId;
use troupe_core::bus::{Bus, WorkerInfo};
use troupe_core::llm::LlmProvider;
use troupe_core::role::{BuiltinRole, RoleInfo};

use super::runner::Runner;
use super::{LlmWorker, Worker};
use crate::config::TroupeConfig;
use crate::error::TroupeError;
use crate::runtime::wrap_bus;

/// A worker of one role, running in its own process.
///
/// ```
/// use std::sync::Arc;
/// use troupe::worker::WorkerService;
/// use troupe::TroupeConfig;
/// use troupe_core::bus::{Bus, MemoryBus};
/// use troupe_core::role::BuiltinRole;
/// use troupe_llm::mock::MockLlm;
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
/// let config = TroupeConfig::default();
/// let worker = WorkerService::builtin_worker(BuiltinRole::Writer, Arc::new(MockLlm::builtin()), Vec::new(), &config).unwrap();
/// let service = WorkerService::start(bus, BuiltinRole::Writer.into(), worker, &config, 4).await.unwrap();
/// assert_eq!(service.agent().as_str().split('-').next(), Some("writer"));
/// service.shutdown().await;
/// # });
/// ```
pub struct WorkerService {
    agent: AgentId,
    runner: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    shutdown: CancellationToken,
    abandon: CancellationToken,
}

impl std::fmt::Debug for WorkerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerService")
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl WorkerService {
    /// The built-in worker of `role` on `llm` (with `fallbacks`), with the
    /// breaker, limits and timeout of `config.llm`. Needs a tokio runtime.
    pub fn builtin_worker(
        role: BuiltinRole,
        llm: Arc<dyn LlmProvider>,
        fallbacks: Vec<Arc<dyn LlmProvider>>,
        config: &TroupeConfig,
    ) -> Result<Arc<dyn Worker>, TroupeError> {
        config.validate()?;
        let llm = crate::resilience::compose(llm, fallbacks, &config.llm)
            .map_err(|e| TroupeError::Setup(e.to_string()))?;
        let info = RoleInfo::from(role);
        let budget = config.orchestrator.prompt_budget_chars();
        Ok(Arc::new(LlmWorker::new(
            llm,
            &info,
            config.llm.clone(),
            budget,
        )))
    }

    /// Joins `role`'s consumer group on `bus` and starts taking its subtasks,
    /// up to `concurrency` at once.
    pub async fn start(
        bus: impl Bus + 'static,
        role: RoleInfo,
        worker: Arc<dyn Worker>,
        config: &TroupeConfig,
        concurrency: usize,
    ) -> Result<Self, TroupeError> {
        config.validate()?;
        if concurrency == 0 {
            return Err(TroupeError::Setup(
                "a worker needs a concurrency of at least 1".into(),
            ));
        }
        // The registry is asked of the bus as given; subtasks go through the wrapped one.
        let given: Arc<dyn Bus> = Arc::new(bus);
        let bus = wrap_bus(given.clone(), config);
        let agent = AgentId::unique(role.role.as_str());
        let busy = Arc::new(AtomicU32::new(0));
        let mut workers = config.workers.clone();
        workers.concurrency = concurrency;
        let runner = Runner {
            agent: agent.clone(),
            role: role.role.clone(),
            worker,
            bus: bus.clone(),
            config: workers.clone(),
            busy: busy.clone(),
        };
        let shutdown = CancellationToken::new();
        let abandon = CancellationToken::new();
        let runner = runner.start(shutdown.clone(), abandon.clone()).await?;
        let now = troupe_core::time::now();
        let info = WorkerInfo {
            agent: agent.clone(),
            role: role.role.to_string(),
            concurrency: u32::try_from(concurrency).unwrap_or(u32::MAX),
            busy: 0,
            pid: std::process::id(),
            host: host_name(),
            started_at: now,
            last_seen: now,
        };
        let heartbeat = tokio::spawn(heartbeat(
            given,
            info,
            busy,
            workers.heartbeat,
            shutdown.clone(),
        ));
        tracing::info!(agent_id = %agent, role = %role.role, concurrency, "worker started");
        Ok(Self {
            agent,
            runner,
            heartbeat,
            shutdown,
            abandon,
        })
    }

    /// The worker's agent id.
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// Stops taking subtasks; those in hand get `workers.shutdown_grace` to
    /// finish, then are handed back to the bus.
    pub async fn shutdown(self) {
        self.stop().await;
    }

    /// Stops at once, handing every subtask in hand back to the bus.
    pub async fn shutdown_now(self) {
        self.abandon.cancel();
        self.stop().await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        if let Err(e) = self.runner.await {
            tracing::error!(error = %e, "the worker stopped abnormally");
        }
        if let Err(e) = self.heartbeat.await {
            tracing::error!(error = %e, "the worker's heartbeat stopped abnormally");
        }
    }
}

/// Keeps the worker's registry entry alive (it lapses after three missed beats).
async fn heartbeat(
    bus: Arc<dyn Bus>,
    mut info: WorkerInfo,
    busy: Arc<AtomicU32>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let Some(registry) = bus.worker_registry() else {
        tracing::warn!(
            bus = bus.name(),
            "the bus keeps no worker registry: this worker will not be listed by `troupe workers`"
        );
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        info.busy = busy.load(Ordering::Relaxed);
        info.last_seen = troupe_core::time::now();
        if let Err(e) = registry.heartbeat(&info, every * 3).await {
            tracing::warn!(error = %e, "could not send the worker's heartbeat");
        }
    }
}

/// This machine's name, for the registry.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
