//! [`Troupe`]: the runtime of one process, as a cheap handle to clone into
//! request handlers and tasks, and its builder ([`TroupeBuilder`]).

mod builder;

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use troupe_core::bus::Bus;
use troupe_core::ledger::ProgressEntry;
use troupe_core::role::RoleInfo;
use troupe_core::store::{Stores, TaskQuery};
use troupe_core::task::{TaskRecord, TaskSummary};
use troupe_core::{AgentId, TaskId};

pub use builder::TroupeBuilder;

use crate::config::TroupeConfig;
use crate::error::TroupeError;
use crate::events::TaskEvents;
use crate::orchestrator::{Orchestrator, TaskHandle};
use crate::resilience::{self, RetryPolicy};
use crate::telemetry::ObservedBus;
use crate::telemetry::events::{QueueDepthRead, emit};
use crate::telemetry::metrics::topic_label;

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
                Ok(depth) => emit(QueueDepthRead {
                    topic: &topic_label(topic),
                    depth,
                }),
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
/// Cloning it is cheap and gives another handle to the same runtime, to
/// hand to request handlers or spawned tasks; [`shutdown`](Self::shutdown)
/// through any handle stops it.
///
/// ```
/// use troupe::Troupe;
/// use troupe_core::task::TaskStatus;
/// use troupe_llm::mock::MockLlm;
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// // The defaults: an in-memory bus and store, the five built-in roles.
/// let troupe = Troupe::builder().llm(MockLlm::builtin()).build().await.unwrap();
/// let task = troupe.run("Write a haiku about rust").await.unwrap();
/// assert_eq!(task.status, TaskStatus::Completed);
/// assert_eq!(task.subtasks.len(), 3);
/// troupe.shutdown().await;
/// # });
/// ```
#[derive(Clone)]
pub struct Troupe {
    inner: Arc<Inner>,
}

struct Inner {
    orchestrator: Orchestrator,
    /// The workers and samplers this process runs, awaited once at shutdown.
    background: Mutex<Vec<JoinHandle<()>>>,
    /// Held while stopping, so that every caller of `shutdown` waits for the end.
    stopping: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
    abandon: CancellationToken,
    stores: Stores,
    roles: Vec<RoleInfo>,
    agent: AgentId,
}

impl std::fmt::Debug for Troupe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Troupe")
            .field("agent", &self.inner.agent)
            .field("roles", &self.inner.roles)
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
        self.inner.orchestrator.submit(goal.into(), None).await
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
        self.inner
            .orchestrator
            .submit(goal.into(), Some(request_id.into()))
            .await
    }

    /// Runs `goal` to its end and returns the task ledger.
    pub async fn run(&self, goal: impl Into<String>) -> Result<TaskRecord, TroupeError> {
        self.submit(goal).await?.wait().await
    }

    /// The progress entries of task `id` from its first, as they are
    /// stored, whichever coordinator drives it; the stream ends after the
    /// task's last entry. See [`TaskEvents`].
    pub fn events(&self, id: TaskId) -> TaskEvents {
        self.inner.orchestrator.feed().events(id, 0)
    }

    /// [`events`](Self::events) after step `after` (to resume a stream).
    pub fn events_after(&self, id: TaskId, after: u64) -> TaskEvents {
        self.inner.orchestrator.feed().events(id, after)
    }

    /// A task's ledger from the store.
    pub async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>, TroupeError> {
        Ok(self.inner.stores.tasks.get_task(id).await?)
    }

    /// A page of tasks from the store, newest first.
    pub async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskSummary>, TroupeError> {
        Ok(self.inner.stores.tasks.list_tasks(query).await?)
    }

    /// A task's whole progress ledger.
    pub async fn progress(&self, id: TaskId) -> Result<Vec<ProgressEntry>, TroupeError> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |e: &ProgressEntry| e.step);
            let page = self.inner.stores.progress.entries(id, after, 1_000).await?;
            let done = page.len() < 1_000;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// Cancels a task running in this process; false if it is not running here.
    pub fn cancel(&self, id: TaskId) -> bool {
        self.inner.orchestrator.cancel(id)
    }

    /// The roles plans may use.
    pub fn roles(&self) -> &[RoleInfo] {
        &self.inner.roles
    }

    /// The orchestrator's agent id.
    pub fn agent_id(&self) -> &AgentId {
        &self.inner.agent
    }

    /// How many tasks are running in this process.
    pub fn running(&self) -> usize {
        self.inner.orchestrator.running()
    }

    /// The stores.
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// Stops the orchestrator and the workers, and returns once they have
    /// stopped (every handle's later call returns at once). Tasks still
    /// running stay in the store as they are; workers get their grace period
    /// to finish.
    pub async fn shutdown(&self) {
        self.stop().await;
    }

    /// Stops at once: like [`shutdown`](Self::shutdown), but the workers hand
    /// their subtasks back to the bus without waiting for them to finish.
    pub async fn shutdown_now(&self) {
        self.inner.abandon.cancel();
        self.stop().await;
    }

    async fn stop(&self) {
        let _stopping = self.inner.stopping.lock().await;
        self.inner.shutdown.cancel();
        self.inner.orchestrator.stopped().await;
        let background = std::mem::take(
            &mut *self
                .inner
                .background
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in background {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a worker stopped abnormally");
            }
        }
    }
}
