//! The orchestrator: plans tasks, dispatches their subtasks as a DAG, keeps
//! both ledgers, and writes the final answer.
//!
//! Each running task has a driver ([`driver`]) in its own tokio task, holding
//! the task ledger in memory and writing every change through to the store.
//! Replies from workers arrive on the orchestrator's inbox topic; one router
//! task hands each to its task's driver. A reply for a task that is not
//! running here is acknowledged and dropped: the store already has whatever
//! the task's end left in it.

mod driver;
mod leases;
pub(crate) mod planner;
pub(crate) mod recorder;
mod structured;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use troupe_core::bus::{Bus, BusError, Delivery, topics};
use troupe_core::ledger::{EventKind, NewProgressEntry};
use troupe_core::llm::LlmProvider;
use troupe_core::store::Stores;
use troupe_core::task::{TaskRecord, TaskStatus};
use troupe_core::{AgentId, Role, TaskId};

use self::driver::{Driver, DriverStart, LeaseSignals, Signals};
use self::planner::Planner;
use self::recorder::Recorder;
use crate::config::TroupeConfig;
use crate::error::TroupeError;
use crate::events::{Feed, TaskEvents};
use crate::prompts::Prompts;
use crate::resilience::Circuit;
use crate::telemetry::events::{TaskDriven, TaskStatusReached, emit};
use crate::telemetry::metrics::ROLE_CIRCUIT_STATE;

/// What every driver shares.
pub(crate) struct Shared {
    pub(crate) agent: AgentId,
    pub(crate) inbox: String,
    pub(crate) stores: Stores,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) llm: Arc<dyn LlmProvider>,
    pub(crate) planner: Planner,
    pub(crate) prompts: Arc<dyn Prompts>,
    pub(crate) config: TroupeConfig,
    pub(crate) recorder: Recorder,
    /// Where progress entries are read from and announced.
    pub(crate) feed: Feed,
    shutdown: CancellationToken,
    drivers: Mutex<HashMap<TaskId, DriverSlot>>,
    /// Every driver task, so that stopping waits for them to give their leases back.
    tracker: TaskTracker,
    /// One circuit breaker per worker role, shared by every task.
    role_circuits: HashMap<Role, Arc<Circuit>>,
}

struct DriverSlot {
    inbox: mpsc::UnboundedSender<Delivery>,
    cancel: CancellationToken,
    /// The lease epoch the driver holds its task under (0: none).
    epoch: u64,
    /// The lease's signals, shared with the driver.
    lease: LeaseSignals,
}

impl Shared {
    /// The breaker of `role`, if the role is known and breakers are on.
    pub(crate) fn role_circuit(&self, role: &Role) -> Option<&Arc<Circuit>> {
        self.role_circuits.get(role)
    }

    fn drivers(&self) -> MutexGuard<'_, HashMap<TaskId, DriverSlot>> {
        // The map is consistent after every operation; a poisoned lock is safe to reuse.
        self.drivers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A submitted task, running in this process.
#[derive(Debug)]
pub struct TaskHandle {
    id: TaskId,
    join: JoinHandle<TaskRecord>,
    cancel: CancellationToken,
    feed: Feed,
}

impl TaskHandle {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's progress entries, from its first, as they are stored; the
    /// stream ends after the task's last. See [`TaskEvents`].
    pub fn events(&self) -> TaskEvents {
        self.feed.events(self.id, 0)
    }

    /// Asks the task to stop; it ends `cancelled`.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits for the task to end and returns its task ledger.
    pub async fn wait(self) -> Result<TaskRecord, TroupeError> {
        self.join
            .await
            .map_err(|e| TroupeError::Internal(format!("the task's driver stopped: {e}")))
    }
}

/// The orchestrator service of one process.
pub(crate) struct Orchestrator {
    shared: Arc<Shared>,
    /// The router and the lease keeper, awaited once by [`stop`](Self::stop).
    background: Mutex<Vec<JoinHandle<()>>>,
}

pub(crate) struct OrchestratorParts {
    pub(crate) agent: AgentId,
    pub(crate) stores: Stores,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) llm: Arc<dyn LlmProvider>,
    pub(crate) planner: Planner,
    pub(crate) prompts: Arc<dyn Prompts>,
    pub(crate) config: TroupeConfig,
    pub(crate) recorder: Recorder,
    /// The roles plans may use.
    pub(crate) roles: Vec<Role>,
}

impl Orchestrator {
    /// Subscribes to the inbox and starts routing replies.
    pub(crate) async fn start(
        parts: OrchestratorParts,
        shutdown: CancellationToken,
    ) -> Result<Self, BusError> {
        let inbox = topics::inbox(&parts.agent);
        let mut sub = parts
            .bus
            .subscribe(&inbox, "orchestrator", &parts.agent)
            .await?;
        let breaker = &parts.config.orchestrator.role_breaker;
        let role_circuits = if breaker.enabled {
            parts
                .roles
                .iter()
                .map(|role| {
                    let circuit = Circuit::new(
                        ROLE_CIRCUIT_STATE,
                        "role",
                        role.as_str(),
                        breaker.clone(),
                        parts.config.orchestrator.subtask_timeout(),
                    );
                    (role.clone(), Arc::new(circuit))
                })
                .collect()
        } else {
            HashMap::new()
        };
        let feed = Feed::new(&parts.stores, parts.recorder.clone());
        let shared = Arc::new(Shared {
            role_circuits,
            agent: parts.agent,
            inbox,
            stores: parts.stores,
            bus: parts.bus,
            llm: parts.llm,
            planner: parts.planner,
            prompts: parts.prompts,
            config: parts.config,
            feed,
            recorder: parts.recorder,
            shutdown: shutdown.clone(),
            drivers: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
        });
        let routing = shared.clone();
        let span = tracing::info_span!("orchestrator", agent_id = %shared.agent);
        let router = tokio::spawn(
            async move {
                loop {
                    let delivery = tokio::select! {
                        () = shutdown.cancelled() => break,
                        d = sub.next() => d,
                    };
                    match delivery {
                        Ok(d) => route(&routing, d).await,
                        Err(BusError::Closed) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "receiving from the inbox failed; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                    }
                }
            }
            .instrument(span.clone()),
        );
        let keeper = tokio::spawn(leases::keep(shared.clone()).instrument(span));
        Ok(Self {
            shared,
            background: Mutex::new(vec![router, keeper]),
        })
    }

    /// Stores a new task and starts driving it; `request_id` names the request
    /// that asked for it in every log line and span of the task (a new one if `None`).
    pub(crate) async fn submit(
        &self,
        goal: String,
        request_id: Option<String>,
    ) -> Result<TaskHandle, TroupeError> {
        let max = self.shared.config.orchestrator.max_goal_chars;
        let goal = goal.trim().to_owned();
        if goal.is_empty() {
            return Err(TroupeError::InvalidGoal("the goal is empty".into()));
        }
        let chars = goal.chars().count();
        if chars > max {
            return Err(TroupeError::InvalidGoal(format!(
                "the goal has {chars} characters; at most {max}"
            )));
        }
        let record = TaskRecord::new(TaskId::new(), goal, troupe_core::time::now());
        let id = record.id;
        let request_id = crate::orchestrator::request_id(request_id.as_deref());
        let span = task_span(&request_id, id, &self.shared.agent);
        self.shared
            .stores
            .tasks
            .create_task(&record)
            .instrument(span.clone())
            .await?;
        let entry = NewProgressEntry::task(
            id,
            &self.shared.agent,
            EventKind::TaskSubmitted,
            "goal accepted",
        );
        let submitted = self
            .shared
            .recorder
            .record(entry)
            .instrument(span.clone())
            .await?;
        // A new task is never orphaned within a lease's time (see `leases`),
        // so nobody else can have taken it yet.
        let lease = self
            .shared
            .stores
            .leases
            .acquire(
                id,
                &self.shared.agent,
                self.shared.config.coordinator.lease_ttl,
            )
            .instrument(span.clone())
            .await?
            .ok_or_else(|| {
                TroupeError::Internal(format!(
                    "task {id} was taken by another coordinator at once"
                ))
            })?;
        emit(TaskStatusReached(TaskStatus::Pending));
        let start = DriverStart {
            record,
            request_id,
            epoch: lease.epoch,
            last_step: submitted.step,
            resumed: None,
        };
        Ok(spawn_driver(&self.shared, start, span))
    }

    /// Cancels a task running here; false if it is not running here.
    pub(crate) fn cancel(&self, id: TaskId) -> bool {
        self.shared
            .drivers()
            .get(&id)
            .map(|slot| slot.cancel.cancel())
            .is_some()
    }

    /// Tasks running here now.
    pub(crate) fn running(&self) -> usize {
        self.shared.drivers().len()
    }

    /// Waits for the router, the lease keeper and every driver to stop
    /// (after the shutdown token was cancelled); later calls return at once.
    pub(crate) async fn stopped(&self) {
        let background = std::mem::take(
            &mut *self
                .background
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in background {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "an orchestrator task stopped abnormally");
            }
        }
        // Drivers see the shutdown at once and give their leases back.
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }

    /// Where progress entries are read from and announced.
    pub(crate) fn feed(&self) -> &Feed {
        &self.shared.feed
    }
}

/// The root span of a task's trace, whatever span the caller is in.
fn task_span(request_id: &str, id: TaskId, agent: &AgentId) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "task",
        otel.name = "task",
        otel.status_code = tracing::field::Empty,
        request_id = %request_id,
        task_id = %id,
        agent_id = %agent,
    )
}

/// Starts driving a task (new or taken over) in its own tokio task.
fn spawn_driver(shared: &Arc<Shared>, start: DriverStart, span: tracing::Span) -> TaskHandle {
    let id = start.record.id;
    let live = LiveTask::new();
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let lease = LeaseSignals::default();
    shared.drivers().insert(
        id,
        DriverSlot {
            inbox: tx,
            cancel: cancel.clone(),
            epoch: start.epoch,
            lease: lease.clone(),
        },
    );
    let signals = Signals {
        cancel: cancel.clone(),
        shutdown: shared.shutdown.clone(),
        lease,
    };
    let driver = Driver::new(shared.clone(), start, rx, signals);
    let owner = shared.clone();
    let join = shared.tracker.spawn(
        async move {
            let record = driver.run().await;
            owner.drivers().remove(&id);
            drop(live);
            record
        }
        .instrument(span),
    );
    TaskHandle {
        id,
        join,
        cancel,
        feed: shared.feed.clone(),
    }
}

/// The longest request id kept; longer ones are replaced by a new one.
const MAX_REQUEST_ID: usize = 128;

/// `given` if it is fit for logs (1 to 128 printable ASCII characters, no
/// spaces), else a new id: what every log line and span of a task carries.
///
/// ```
/// assert_eq!(troupe::request_id(Some("req-42")), "req-42");
/// assert_ne!(troupe::request_id(Some("a b")), "a b");
/// assert_eq!(troupe::request_id(None).len(), 36);
/// ```
pub fn request_id(given: Option<&str>) -> String {
    given
        .filter(|id| {
            !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// Counts a task this process drives in the `multiagent_pending_tasks`
/// gauge (tasks not yet ended) for as long as its driver lives, however
/// its driver ends (even by a panic).
struct LiveTask;

impl LiveTask {
    fn new() -> Self {
        emit(TaskDriven(true));
        Self
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        emit(TaskDriven(false));
    }
}

/// Hands a reply to its task's driver, or drops it if that task is not running here.
async fn route(shared: &Shared, delivery: Delivery) {
    let Some(task_id) = delivery.envelope.task_id else {
        tracing::warn!(message_id = %delivery.envelope.id, "message without a task id set aside");
        if let Err(e) = delivery.dead_letter("no task_id").await {
            tracing::warn!(error = %e, "could not dead-letter a message");
        }
        return;
    };
    let slot = shared.drivers().get(&task_id).map(|s| s.inbox.clone());
    let orphan = match slot {
        Some(inbox) => inbox.send(delivery).err().map(|e| e.0),
        None => Some(delivery),
    };
    if let Some(d) = orphan {
        tracing::debug!(%task_id, kind = %d.envelope.kind, "reply for a task not running here dropped");
        if let Err(e) = d.ack().await {
            tracing::warn!(error = %e, "could not acknowledge a dropped reply");
        }
    }
}
