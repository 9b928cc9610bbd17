//! [`TroupeBuilder`]: an LLM, a bus, stores, prompts and workers, put
//! together into a running [`Troupe`].

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use troupe_core::bus::{Bus, MemoryBus, topics};
use troupe_core::llm::{LlmProvider, ModelHints};
use troupe_core::role::{BuiltinRole, RoleInfo};
use troupe_core::store::Stores;
use troupe_core::{AgentId, Role};

use super::{Inner, Troupe, sample_queues, wrap_bus};
use crate::config::TroupeConfig;
use crate::error::TroupeError;
use crate::orchestrator::planner::Planner;
use crate::orchestrator::recorder::Recorder;
use crate::orchestrator::{Orchestrator, OrchestratorParts};
use crate::prompts::{DefaultPrompts, Prompts};
use crate::resilience::{self, RetryPolicy};
use crate::worker::runner::Runner;
use crate::worker::{FnWorker, Job, LlmWorker, WorkError, WorkOutput, Worker, WorkerContext};

/// How many progress entries an in-process reader may fall behind before it
/// reads the store instead.
const EVENT_BUFFER: usize = 4_096;

/// Builds a [`Troupe`].
pub struct TroupeBuilder {
    config: TroupeConfig,
    hints: ModelHints,
    llm: Option<Arc<dyn LlmProvider>>,
    fallbacks: Vec<Arc<dyn LlmProvider>>,
    bus: Option<Arc<dyn Bus>>,
    stores: Option<Stores>,
    prompts: Arc<dyn Prompts>,
    builtin: Vec<BuiltinRole>,
    custom: Vec<(RoleInfo, Arc<dyn Worker>)>,
    /// Mistakes found while building, reported by [`build`](Self::build).
    errors: Vec<String>,
    host_workers: bool,
    agent: Option<AgentId>,
}

impl Default for TroupeBuilder {
    fn default() -> Self {
        Self {
            config: TroupeConfig::default(),
            hints: ModelHints::default(),
            llm: None,
            fallbacks: Vec::new(),
            bus: None,
            stores: None,
            prompts: Arc::new(DefaultPrompts),
            builtin: BuiltinRole::ALL.to_vec(),
            custom: Vec::new(),
            errors: Vec::new(),
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

    /// What is known of the model (from `troupe_llm::open`, say): applied
    /// to the configuration wherever it leaves a value unset
    /// ([`TroupeConfig::with_hints`]).
    pub fn model_hints(mut self, hints: ModelHints) -> Self {
        self.hints = hints;
        self
    }

    /// The LLM the orchestrator and the built-in workers use (required).
    /// It gets the circuit breaker, limits and timeout of `[llm]`.
    pub fn llm(mut self, llm: impl LlmProvider + 'static) -> Self {
        self.llm = Some(Arc::new(llm));
        self
    }

    /// A provider to use when the ones before it are unavailable (circuit
    /// open) or refuse a request for good; call again for more, in order.
    /// Each gets its own breaker and limits.
    pub fn fallback_llm(mut self, llm: impl LlmProvider + 'static) -> Self {
        self.fallbacks.push(Arc::new(llm));
        self
    }

    /// [`fallback_llm`](Self::fallback_llm) for each, in order.
    pub fn fallback_llms(mut self, llms: impl IntoIterator<Item = Arc<dyn LlmProvider>>) -> Self {
        self.fallbacks.extend(llms);
        self
    }

    /// The bus (an in-memory one otherwise). Its capabilities (dead letters,
    /// a worker registry, queue depths) are used where it offers them.
    pub fn bus(mut self, bus: impl Bus + 'static) -> Self {
        self.bus = Some(Arc::new(bus));
        self
    }

    /// The stores (in-memory ones otherwise).
    pub fn stores(mut self, stores: Stores) -> Self {
        self.stores = Some(stores);
        self
    }

    /// The prompts of the orchestrator and the built-in workers
    /// ([`DefaultPrompts`] otherwise).
    pub fn prompts(mut self, prompts: impl Prompts) -> Self {
        self.prompts = Arc::new(prompts);
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

    /// Adds a role served by an async function of the job and its context,
    /// without a type of its own; an invalid role name is reported by
    /// [`build`](Self::build).
    ///
    /// ```
    /// use troupe::Troupe;
    /// use troupe::worker::{WorkError, WorkOutput};
    /// use troupe_llm::mock::MockLlm;
    ///
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// let troupe = Troupe::builder()
    ///     .llm(MockLlm::builtin())
    ///     .worker_fn("counter", "counts the words of its dependencies' results", |job, ctx| async move {
    ///         ctx.progress("counting").await;
    ///         let words: usize = job.dependencies.iter().map(|d| d.result.split_whitespace().count()).sum();
    ///         Ok::<_, WorkError>(WorkOutput::text(format!("{words} words")))
    ///     })
    ///     .build()
    ///     .await
    ///     .unwrap();
    /// assert!(troupe.roles().iter().any(|r| r.role.as_str() == "counter"));
    /// troupe.shutdown().await;
    /// # });
    /// ```
    pub fn worker_fn<F, Fut>(
        mut self,
        role: impl AsRef<str>,
        description: impl Into<String>,
        f: F,
    ) -> Self
    where
        F: Fn(Job, WorkerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<WorkOutput, WorkError>> + Send + 'static,
    {
        match Role::new(role.as_ref()) {
            Ok(role) => self.worker(role, description, FnWorker::new(f)),
            Err(e) => {
                self.errors
                    .push(format!("worker_fn({:?}): {e}", role.as_ref()));
                self
            }
        }
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
        if !self.errors.is_empty() {
            return Err(TroupeError::Setup(self.errors.join("; ")));
        }
        let config = self.config.with_hints(&self.hints);
        config.validate()?;
        let llm = self
            .llm
            .ok_or_else(|| TroupeError::Setup("no LLM provider: call .llm(...)".into()))?;
        let llm = resilience::compose(llm, self.fallbacks, &config.llm)
            .map_err(|e| TroupeError::Setup(e.to_string()))?;
        // Capabilities (queue depth) are asked of the bus as given; the
        // runtime sends and receives through the wrapped one.
        let given = self.bus.unwrap_or_else(|| Arc::new(MemoryBus::default()));
        let bus = wrap_bus(given.clone(), &config);
        let retry = &config.retry;
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
        let prompt_budget = config.orchestrator.prompt_budget_chars();
        for builtin in self.builtin {
            let info = RoleInfo::from(builtin);
            if workers.iter().any(|(r, _)| r.role == info.role) {
                continue;
            }
            let worker = LlmWorker::with_prompts(
                llm.clone(),
                &info,
                config.llm.clone(),
                prompt_budget,
                self.prompts.clone(),
            );
            workers.push((info, Arc::new(worker)));
        }
        let roles: Vec<RoleInfo> = workers.iter().map(|(info, _)| info.clone()).collect();
        let planner = Planner::new(
            roles.clone(),
            config.orchestrator.max_subtasks,
            self.prompts.clone(),
        )?;

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
            prompts: self.prompts,
            config: config.clone(),
            recorder,
            roles: roles.iter().map(|r| r.role.clone()).collect(),
        };
        let orchestrator = Orchestrator::start(parts, shutdown.clone()).await?;

        let mut handles = Vec::new();
        if self.host_workers {
            for (info, worker) in &workers {
                for n in 1..=config.workers.per_role {
                    let runner = Runner {
                        agent: AgentId::unique(&format!("{}-{n}", info.role)),
                        role: info.role.clone(),
                        worker: worker.clone(),
                        bus: bus.clone(),
                        config: config.workers.clone(),
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
            inner: Arc::new(Inner {
                orchestrator,
                background: Mutex::new(handles),
                stopping: tokio::sync::Mutex::new(()),
                shutdown,
                abandon,
                stores,
                roles,
                agent,
            }),
        })
    }
}
