//! [`Troupe`]: the runtime of one process, and its builder.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use troupe_core::bus::{Bus, MemoryBus, topics};
use troupe_core::ledger::ProgressEntry;
use troupe_core::llm::LlmProvider;
use troupe_core::role::{BuiltinRole, RoleInfo};
use troupe_core::store::Stores;
use troupe_core::task::TaskRecord;
use troupe_core::{AgentId, Role, TaskId};

use crate::config::TroupeConfig;
use crate::error::TroupeError;
use crate::orchestrator::planner::Planner;
use crate::orchestrator::recorder::Recorder;
use crate::orchestrator::{Orchestrator, OrchestratorParts, TaskHandle};
use crate::resilience::{self, RetryPolicy};
use crate::telemetry::ObservedBus;
use crate::telemetry::metrics::{QUEUE_DEPTH, topic_label};
use crate::worker::runner::Runner;
use crate::worker::{LlmWorker, Worker};

/// How many progress entries an observer may fall behind before it misses some.
const EVENT_BUFFER: usize = 4_096;

/// How often the depth of this process's topics is read into the metrics.
const QUEUE_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the queue-depth gauge of `topics` current until `shutdown`, if the
/// bus can tell its depth.
async fn sample_queues(bus: Arc<dyn Bus>, topics: Vec<String>, shutdown: CancellationToken) {
    let Some(depths) = bus.queue_depth() else {
        tracing::info!(
            bus = bus.name(),
            "the bus cannot tell its queue depth; multiagent_queue_depth stays empty"
        );
        return;
    };
    let mut tick = tokio::time::interval(QUEUE_SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for topic in &topics {
            match depths.depth(topic).await {
                Ok(depth) => {
                    // Gauges are f64; a depth beyond 2^53 is not a concern.
                    #[allow(clippy::cast_precision_loss)]
                    let depth = depth as f64;
                    ::metrics::gauge!(QUEUE_DEPTH, "topic" => topic_label(topic)).set(depth);
                }
                Err(e) => tracing::debug!(topic, error = %e, "could not read a queue's depth"),
            }
        }
    }
}

/// `bus` as the runtime uses it: observed (spans, metrics) and with its
/// publishes retried by `[retry] bus`.
pub(crate) fn wrap_bus(bus: Arc<dyn Bus>, config: &TroupeConfig) -> Arc<dyn Bus> {
    let retry = &config.retry.bus;
    let observed: Arc<dyn Bus> = Arc::new(ObservedBus::new(bus));
    Arc::new(resilience::Retrying::new(
        observed,
        RetryPolicy::new(retry.max_attempts, retry.backoff.clone()),
    ))
}

/// The runtime of one process: an orchestrator and the workers it hosts.
///
/// ```
/// use std::sync::Arc;
/// use troupe::Troupe;
/// use troupe_core::task::TaskStatus;
/// use troupe_llm::mock::MockLlm;
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// // The defaults: an in-memory bus and store, the five built-in roles.
/// let troupe = Troupe::builder().llm(Arc::new(MockLlm::builtin())).build().await.unwrap();
/// let task = troupe.run("Write a haiku about rust").await.unwrap();
/// assert_eq!(task.status, TaskStatus::Completed);
/// assert_eq!(task.subtasks.len(), 3);
/// troupe.shutdown().await;
/// # });
/// ```
pub struct Troupe {
    orchestrator: Orchestrator,
    workers: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
    abandon: CancellationToken,
    stores: Stores,
    recorder: Recorder,
    roles: Vec<RoleInfo>,
    agent: AgentId,
}

impl std::fmt::Debug for Troupe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Troupe")
            .field("agent", &self.agent)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl Troupe {
    /// A builder with the defaults.
    pub fn builder() -> TroupeBuilder {
        TroupeBuilder::default()
    }

    /// Stores a task for `goal` and starts it; returns at once.
    pub async fn submit(&self, goal: impl Into<String>) -> Result<TaskHandle, TroupeError> {
        self.orchestrator.submit(goal.into(), None).await
    }

    /// Like [`submit`](Self::submit), for a request with its own id (an HTTP
    /// `X-Request-Id`, say): every log line and span of the task carries it.
    /// An id that is empty, longer than 128 characters or not printable ASCII
    /// without spaces is replaced by a new one.
    pub async fn submit_for_request(
        &self,
        goal: impl Into<String>,
        request_id: impl Into<String>,
    ) -> Result<TaskHandle, TroupeError> {
        self.orchestrator
            .submit(goal.into(), Some(request_id.into()))
            .await
    }

    /// Runs `goal` to its end and returns the task ledger.
    pub async fn run(&self, goal: impl Into<String>) -> Result<TaskRecord, TroupeError> {
        self.submit(goal).await?.wait().await
    }

    /// Every progress entry stored from now on, as it is stored.
    pub fn subscribe(&self) -> broadcast::Receiver<ProgressEntry> {
        self.recorder.subscribe()
    }

    /// A task's ledger from the store.
    pub async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>, TroupeError> {
        Ok(self.stores.tasks.get_task(id).await?)
    }

    /// A task's whole progress ledger.
    pub async fn progress(&self, id: TaskId) -> Result<Vec<ProgressEntry>, TroupeError> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |e: &ProgressEntry| e.step);
            let page = self.stores.progress.entries(id, after, 1_000).await?;
            let done = page.len() < 1_000;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// Cancels a task running in this process; false if it is not running here.
    pub fn cancel(&self, id: TaskId) -> bool {
        self.orchestrator.cancel(id)
    }

    /// The roles plans may use.
    pub fn roles(&self) -> &[RoleInfo] {
        &self.roles
    }

    /// The orchestrator's agent id.
    pub fn agent_id(&self) -> &AgentId {
        &self.agent
    }

    /// How many tasks are running in this process.
    pub fn running(&self) -> usize {
        self.orchestrator.running()
    }

    /// The stores.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Stops the orchestrator and the workers. Tasks still running stay in the
    /// store as they are; workers get their grace period to finish.
    pub async fn shutdown(self) {
        self.stop().await;
    }

    /// Stops at once: like [`shutdown`](Self::shutdown), but the workers hand
    /// their subtasks back to the bus without waiting for them to finish.
    pub async fn shutdown_now(self) {
        self.abandon.cancel();
        self.stop().await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.orchestrator.stopped().await;
        for worker in self.workers {
            if let Err(e) = worker.await {
                tracing::error!(error = %e, "a worker stopped abnormally");
            }
        }
    }
}

/// Builds a [`Troupe`].
pub struct TroupeBuilder {
    config: TroupeConfig,
    llm: Option<Arc<dyn LlmProvider>>,
    fallbacks: Vec<Arc<dyn LlmProvider>>,
    bus: Option<Arc<dyn Bus>>,
    stores: Option<Stores>,
    builtin: Vec<BuiltinRole>,
    custom: Vec<(RoleInfo, Arc<dyn Worker>)>,
    host_workers: bool,
    agent: Option<AgentId>,
}

impl Default for TroupeBuilder {
    fn default() -> Self {
        Self {
            config: TroupeConfig::default(),
            llm: None,
            fallbacks: Vec::new(),
            bus: None,
            stores: None,
            builtin: BuiltinRole::ALL.to_vec(),
            custom: Vec::new(),
            host_workers: true,
            agent: None,
        }
    }
}

impl std::fmt::Debug for TroupeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TroupeBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TroupeBuilder {
    /// The configuration (defaults otherwise).
    pub fn config(mut self, config: TroupeConfig) -> Self {
        self.config = config;
        self
    }

    /// The LLM the orchestrator and the built-in workers use (required).
    /// It gets the circuit breaker, limits and timeout of `[llm]`.
    pub fn llm(mut self, llm: Arc<dyn LlmProvider>) -> Self {
        self.llm = Some(llm);
        self
    }

    /// A provider to use when the ones before it are unavailable (circuit
    /// open) or refuse a request for good; call again for more, in order.
    /// Each gets its own breaker and limits.
    pub fn fallback_llm(mut self, llm: Arc<dyn LlmProvider>) -> Self {
        self.fallbacks.push(llm);
        self
    }

    /// [`fallback_llm`](Self::fallback_llm) for each, in order.
    pub fn fallback_llms(mut self, llms: impl IntoIterator<Item = Arc<dyn LlmProvider>>) -> Self {
        self.fallbacks.extend(llms);
        self
    }

    /// The bus (an in-memory one otherwise).
    pub fn bus(mut self, bus: Arc<dyn Bus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// The stores (in-memory ones otherwise).
    pub fn stores(mut self, stores: Stores) -> Self {
        self.stores = Some(stores);
        self
    }

    /// Which built-in roles to offer (all five otherwise).
    pub fn builtin_roles(mut self, roles: impl IntoIterator<Item = BuiltinRole>) -> Self {
        self.builtin = roles.into_iter().collect();
        self
    }

    /// Adds a role served by your worker; the planner sees `description`. A
    /// built-in role of the same name is replaced.
    pub fn worker(
        mut self,
        role: Role,
        description: impl Into<String>,
        worker: impl Worker + 'static,
    ) -> Self {
        self.custom.push((
            RoleInfo {
                role,
                description: description.into(),
            },
            Arc::new(worker),
        ));
        self
    }

    /// Whether this process hosts workers for every role (true otherwise).
    pub fn host_workers(mut self, host: bool) -> Self {
        self.host_workers = host;
        self
    }

    /// The orchestrator's agent id (a unique one otherwise).
    pub fn agent_id(mut self, id: AgentId) -> Self {
        self.agent = Some(id);
        self
    }

    /// Starts the orchestrator and the workers.
    pub async fn build(self) -> Result<Troupe, TroupeError> {
        self.config.validate()?;
        let llm = self
            .llm
            .ok_or_else(|| TroupeError::Setup("no LLM provider: call .llm(...)".into()))?;
        let llm = resilience::compose(llm, self.fallbacks, &self.config.llm)
            .map_err(|e| TroupeError::Setup(e.to_string()))?;
        // Capabilities (queue depth) are asked of the bus as given; the
        // runtime sends and receives through the wrapped one.
        let given = self.bus.unwrap_or_else(|| Arc::new(MemoryBus::default()));
        let bus = wrap_bus(given.clone(), &self.config);
        let retry = &self.config.retry;
        let stores = resilience::retrying_stores(
            self.stores.unwrap_or_else(Stores::memory),
            RetryPolicy::new(retry.store.max_attempts, retry.store.backoff.clone()),
        );

        let mut workers: Vec<(RoleInfo, Arc<dyn Worker>)> = Vec::new();
        for (info, worker) in self.custom {
            if workers.iter().any(|(r, _)| r.role == info.role) {
                return Err(TroupeError::Setup(format!(
                    "role {} has two workers",
                    info.role
                )));
            }
            workers.push((info, worker));
        }
        let prompt_budget = self.config.orchestrator.prompt_budget_chars();
        for builtin in self.builtin {
            let info = RoleInfo::from(builtin);
            if workers.iter().any(|(r, _)| r.role == info.role) {
                continue;
            }
            let worker = LlmWorker::new(llm.clone(), &info, self.config.llm.clone(), prompt_budget);
            workers.push((info, Arc::new(worker)));
        }
        let roles: Vec<RoleInfo> = workers.iter().map(|(info, _)| info.clone()).collect();
        let planner = Planner::new(roles.clone(), self.config.orchestrator.max_subtasks)?;

        let agent = self
            .agent
            .unwrap_or_else(|| AgentId::unique("orchestrator"));
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let recorder = Recorder::new(agent.clone(), stores.progress.clone(), events);
        let shutdown = CancellationToken::new();
        let abandon = CancellationToken::new();
        let parts = OrchestratorParts {
            agent: agent.clone(),
            stores: stores.clone(),
            bus: bus.clone(),
            llm,
            planner,
            config: self.config.clone(),
            recorder: recorder.clone(),
            roles: roles.iter().map(|r| r.role.clone()).collect(),
        };
        let orchestrator = Orchestrator::start(parts, shutdown.clone()).await?;

        let mut handles = Vec::new();
        if self.host_workers {
            for (info, worker) in &workers {
                for n in 1..=self.config.workers.per_role {
                    let runner = Runner {
                        agent: AgentId::unique(&format!("{}-{n}", info.role)),
                        role: info.role.clone(),
                        worker: worker.clone(),
                        bus: bus.clone(),
                        config: self.config.workers.clone(),
                        busy: Arc::default(),
                    };
                    handles.push(runner.start(shutdown.clone(), abandon.clone()).await?);
                }
            }
        }
        let mut topics: Vec<String> = roles.iter().map(|r| topics::role(&r.role)).collect();
        topics.push(topics::inbox(&agent));
        handles.push(tokio::spawn(sample_queues(given, topics, shutdown.clone())));
        tracing::info!(agent_id = %agent, bus = bus.name(), roles = roles.len(), workers = handles.len() - 1, "troupe started");
        Ok(Troupe {
            orchestrator,
            workers: handles,
            shutdown,
            abandon,
            stores,
            recorder,
            roles,
            agent,
        })
    }
}
