//! The driver of one task: Magentic-One's loops over a DAG of subtasks.
//!
//! Outer loop: plan, and when the run is blocked (a subtask failed for good)
//! or stalls (too many failures in a row with no completion), re-plan with
//! what was learned, a bounded number of times. Inner loop: dispatch every
//! ready subtask (its dependencies completed), then wait for the next reply,
//! attempt deadline or retry time, and apply it to the task ledger. Every
//! change is written to the store before the message that caused it is
//! acknowledged, and every step goes into the progress ledger.

mod answer;
mod dispatch;
mod planning;
mod replies;
mod resume;

pub(super) use resume::{DriverState, resumed_record};

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use troupe_core::bus::Delivery;
use troupe_core::ledger::{
    Applied, EventKind, NewProgressEntry, ProgressEntry, SubtaskChange, TaskLedger,
};
use troupe_core::store::{StoreError, TaskUpdate};
use troupe_core::task::{SubtaskStatus, TaskRecord, TaskStatus, Usage};
use troupe_core::{AgentId, SubtaskId};

use super::Shared;
use crate::config::duration::format as fmt;
use crate::resilience::Circuit;
use crate::telemetry::metrics::{TASK_DURATION_SECONDS, TASKS_TOTAL};

/// Why a task's run ended early.
enum End {
    /// It failed, for this reason.
    Failed(String),
    /// Someone cancelled it.
    Cancelled,
    /// The process is stopping: leave the task as the store has it.
    Shutdown,
    /// The store failed.
    Store(StoreError),
    /// Another coordinator took the task (this one's lease lapsed): leave it
    /// to them, writing nothing more.
    Lost,
}

impl From<StoreError> for End {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Fenced(_) => End::Lost,
            e => End::Store(e),
        }
    }
}

/// What woke the driver.
enum Wake {
    Shutdown,
    Lost,
    Cancelled,
    Reply(Box<Delivery>),
    InboxClosed,
    Timer,
}

pub(super) struct Driver {
    shared: Arc<Shared>,
    ledger: TaskLedger,
    inbox: mpsc::UnboundedReceiver<Delivery>,
    cancel: CancellationToken,
    shutdown: CancellationToken,
    /// When each in-flight attempt times out.
    deadlines: HashMap<SubtaskId, Instant>,
    /// When each subtask waiting for another attempt may be dispatched.
    retry_at: HashMap<SubtaskId, Instant>,
    /// Failures since the last completion (Magentic-One's stall counter).
    stalls: u32,
    replans: u32,
    task_deadline: Instant,
    /// Replies received while a long call ran, oldest first.
    held: VecDeque<Delivery>,
    /// Tokens the orchestrator spent (planning, synthesis) not yet written to
    /// a progress entry: the next entry of its own carries them.
    unrecorded: Usage,
    /// The request the task came from, passed on to the workers.
    request_id: String,
    /// The `subtask.dispatch` span of each attempt in flight.
    attempt_spans: HashMap<SubtaskId, tracing::Span>,
    /// The role breaker each attempt in flight passed, and whether as its trial.
    attempt_gates: HashMap<SubtaskId, (Arc<Circuit>, bool)>,
    /// When this process took the task (for its duration metric).
    started: std::time::Instant,
    /// The lease epoch this driver holds the task under (0: no lease).
    epoch: u64,
    /// Its lease's signals, shared with the lease keeper.
    lease: LeaseSignals,
    /// Steps since the last checkpoint.
    since_checkpoint: u32,
    /// The last progress step this driver recorded.
    last_step: u64,
    /// For a taken-over task: the step of the checkpoint it resumes from.
    resumed_from: Option<u64>,
}

/// Writes a subtask change and the progress entry that tells of it, both for
/// the entry's task and under its fence, at once: they usually share one
/// commit (see [`Driver::apply_recorded`]).
async fn write_step(
    shared: &Shared,
    id: &SubtaskId,
    change: &SubtaskChange,
    entry: NewProgressEntry,
) -> Result<(Applied, ProgressEntry), StoreError> {
    let (task, fence) = (entry.task_id, entry.fence);
    tokio::try_join!(
        shared.stores.tasks.update_subtask(task, id, change, fence),
        shared.recorder.record(entry)
    )
}

/// How a driver starts: a new task, or one taken over.
pub(super) struct DriverStart {
    /// The task ledger.
    pub(super) record: TaskRecord,
    /// The request it came from.
    pub(super) request_id: String,
    /// The lease epoch held (0 for none).
    pub(super) epoch: u64,
    /// The last progress step recorded before the driver starts (for a
    /// take-over, that of the checkpoint it resumes from).
    pub(super) last_step: u64,
    /// For a take-over: the driver state the checkpoint kept (the default
    /// when there was none); `None` for a new task.
    pub(super) resumed: Option<DriverState>,
}

/// What the lease keeper and a driver tell each other about the task's lease.
#[derive(Clone, Default)]
pub(super) struct LeaseSignals {
    /// Cancelled by the keeper when the lease is lost to another coordinator.
    pub(super) lost: CancellationToken,
    /// Set by the driver once it starts storing the task's end (the lease
    /// then lapses with the task, and needs no renewal).
    pub(super) ending: Arc<std::sync::atomic::AtomicBool>,
}

impl Driver {
    pub(super) fn new(
        shared: Arc<Shared>,
        start: DriverStart,
        inbox: mpsc::UnboundedReceiver<Delivery>,
        cancel: CancellationToken,
        shutdown: CancellationToken,
        lease: LeaseSignals,
    ) -> Self {
        // The time limit counts from submission, whichever coordinator drives the task.
        let age = (troupe_core::time::now() - start.record.created_at)
            .to_std()
            .unwrap_or_default();
        let left = shared.config.orchestrator.task_timeout.saturating_sub(age);
        let task_deadline = Instant::now() + left;
        let resumed_from = start.resumed.is_some().then_some(start.last_step);
        let state = start.resumed.unwrap_or_default();
        Self {
            shared,
            ledger: TaskLedger::new(start.record),
            inbox,
            cancel,
            shutdown,
            deadlines: HashMap::new(),
            retry_at: HashMap::new(),
            stalls: state.stalls,
            replans: state.replans,
            task_deadline,
            held: VecDeque::new(),
            unrecorded: Usage::default(),
            request_id: start.request_id,
            attempt_spans: HashMap::new(),
            attempt_gates: HashMap::new(),
            started: std::time::Instant::now(),
            epoch: start.epoch,
            lease,
            since_checkpoint: 0,
            last_step: start.last_step,
            resumed_from,
        }
    }

    /// Ends the span of a subtask's attempt with its outcome.
    fn close_attempt(&mut self, id: &SubtaskId, outcome: &'static str, failed: bool) {
        if let Some(span) = self.attempt_spans.remove(id) {
            span.record("outcome", outcome);
            if failed {
                span.record("otel.status_code", "ERROR");
            }
        }
    }

    /// Ends the spans of every attempt in flight (a new plan replaced them,
    /// or the task ended); their role-breaker trials say nothing.
    fn close_superseded_attempts(&mut self) {
        for (_, span) in self.attempt_spans.drain() {
            span.record("outcome", "superseded");
        }
        for (_, (circuit, trial)) in self.attempt_gates.drain() {
            if trial {
                circuit.abandon_trial();
            }
        }
    }

    /// Tells the attempt's role breaker how it went: `failed` for a timeout or
    /// a retryable error (the role's workers are unwell), not for a result or
    /// a permanent refusal (they answered).
    fn gate_outcome(&mut self, id: &SubtaskId, failed: bool) {
        if let Some((circuit, trial)) = self.attempt_gates.remove(id) {
            circuit.record(failed, trial);
        }
    }

    /// The span of a subtask's attempt in flight, or a disabled one.
    fn attempt_span(&self, id: &SubtaskId) -> tracing::Span {
        self.attempt_spans
            .get(id)
            .cloned()
            .unwrap_or_else(tracing::Span::none)
    }

    /// Runs the task to its end and returns its task ledger.
    pub(super) async fn run(mut self) -> TaskRecord {
        tracing::info!(
            goal_chars = self.ledger.record().goal.chars().count(),
            "task started"
        );
        let outcome = self.drive().await;
        let (status, result, error) = match outcome {
            Ok(answer) => (TaskStatus::Completed, Some(answer), None),
            Err(End::Failed(reason)) => (TaskStatus::Failed, None, Some(reason)),
            Err(End::Cancelled) => (
                TaskStatus::Cancelled,
                None,
                Some("cancelled on request".to_owned()),
            ),
            Err(End::Store(e)) => (
                TaskStatus::Failed,
                None,
                Some(format!("the store failed: {e}")),
            ),
            Err(End::Shutdown) => {
                tracing::info!("process stopping; the task is left as stored");
                self.release().await;
                return self.ledger.into_record();
            }
            Err(End::Lost) => {
                tracing::warn!("another coordinator took the task over; leaving it to them");
                self.close_superseded_attempts();
                return self.ledger.into_record();
            }
        };
        // The recorder logs the end with its reason; the span gets the status.
        if status == TaskStatus::Failed {
            tracing::Span::current().record("otel.status_code", "ERROR");
        }
        self.close_superseded_attempts();
        self.lease
            .ending
            .store(true, std::sync::atomic::Ordering::Relaxed);
        ::metrics::histogram!(TASK_DURATION_SECONDS, "status" => status.as_str())
            .record(self.started.elapsed().as_secs_f64());
        match self.finish(status, result, error).await {
            Ok(()) => {}
            Err(StoreError::Fenced(_)) => {
                tracing::warn!("another coordinator took the task over before its end was stored");
            }
            Err(e) => tracing::error!(error = %e, "could not store the end of the task"),
        }
        self.ledger.into_record()
    }

    async fn drive(&mut self) -> Result<String, End> {
        if let Some(step) = self.resumed_from {
            self.take_over(step).await?;
        }
        if !self.has_plan() {
            let note = (
                EventKind::PlanningStarted,
                "asking the LLM for a plan".into(),
            );
            self.set_status(TaskStatus::Planning, Some(note)).await?;
            let plan = self.ask_plan(None).await?;
            self.install(plan).await?;
        } else if self.ledger.record().status != TaskStatus::Running {
            self.set_status(TaskStatus::Running, None).await?;
        }
        loop {
            self.dispatch_ready().await?;
            self.replan_if_stalled().await?;
            if self.ledger.is_done() {
                break;
            }
            if self.ledger.in_flight() == 0 && self.retry_at.is_empty() {
                let reason = self.blocked_reason();
                self.replan_or_fail(reason).await?;
                continue;
            }
            match self.wait().await {
                Wake::Shutdown => return Err(End::Shutdown),
                Wake::Lost => return Err(End::Lost),
                Wake::Cancelled => return Err(End::Cancelled),
                Wake::InboxClosed => return Err(End::Shutdown),
                Wake::Reply(d) => self.on_reply(*d).await?,
                Wake::Timer => self.on_timer().await?,
            }
            self.step_done().await?;
            self.replan_if_stalled().await?;
        }
        self.synthesize().await
    }

    async fn wait(&mut self) -> Wake {
        if let Some(d) = self.held.pop_front() {
            return Wake::Reply(Box::new(d));
        }
        let wake_at = self
            .deadlines
            .values()
            .chain(self.retry_at.values())
            .copied()
            .min()
            .map_or(self.task_deadline, |t| t.min(self.task_deadline));
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Wake::Shutdown,
            () = self.lease.lost.cancelled() => Wake::Lost,
            () = self.cancel.cancelled() => Wake::Cancelled,
            d = self.inbox.recv() => d.map_or(Wake::InboxClosed, |d| Wake::Reply(Box::new(d))),
            () = tokio::time::sleep_until(wake_at) => Wake::Timer,
        }
    }

    /// Runs `fut` unless the task is cancelled, the process stops, or the task's
    /// time runs out. Replies that arrive meanwhile (an LLM call can take
    /// minutes) are held, their visibility on the bus extended every heartbeat so
    /// they are not redelivered, and handled by the next [`wait`](Self::wait).
    async fn bounded<T>(&mut self, fut: impl Future<Output = T>) -> Result<T, End> {
        tokio::pin!(fut);
        let mut keepalive = tokio::time::interval(self.shared.config.workers.heartbeat);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.tick().await;
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Err(End::Shutdown),
                () = self.lease.lost.cancelled() => return Err(End::Lost),
                () = self.cancel.cancelled() => return Err(End::Cancelled),
                () = tokio::time::sleep_until(self.task_deadline) => return Err(self.timed_out()),
                v = &mut fut => return Ok(v),
                Some(d) = self.inbox.recv() => self.held.push_back(d),
                _ = keepalive.tick() => {
                    for d in &self.held {
                        if let Err(e) = d.extend().await {
                            tracing::debug!(error = %e, "could not extend a held reply");
                        }
                    }
                }
            }
        }
    }

    fn timed_out(&self) -> End {
        End::Failed(format!(
            "the task did not finish within {}",
            fmt(self.shared.config.orchestrator.task_timeout)
        ))
    }

    /// Applies a change to the ledger and, if it changed, writes it to the
    /// store together with its progress entry (built by `entry` only then).
    ///
    /// The two writes go to the store at once, not one after the other: they
    /// usually share one commit, and the task waits for one write instead of
    /// two. So the entry is stored even when the store turns out not to take
    /// the change (it disagreed with the ledger: someone else changed the
    /// task); the ledger is then reloaded from the store.
    async fn apply_recorded(
        &mut self,
        id: &SubtaskId,
        change: &SubtaskChange,
        entry: impl FnOnce(&mut Self) -> NewProgressEntry,
    ) -> Result<bool, End> {
        if !matches!(self.ledger.apply(id, change), Ok(Applied::Changed)) {
            return Ok(false);
        }
        let entry = entry(self);
        let (stored, recorded) = write_step(&self.shared, id, change, entry).await?;
        self.last_step = self.last_step.max(recorded.step);
        if stored == Applied::Unchanged {
            self.resync().await?;
        }
        Ok(stored.changed())
    }

    /// Reloads the ledger from the store after they disagreed (someone else
    /// changed the task); the store is the source of truth.
    async fn resync(&mut self) -> Result<(), End> {
        tracing::warn!("the task ledger and the store disagree; reloading from the store");
        match self.shared.stores.tasks.get_task(self.ledger.id()).await? {
            Some(mut record) => {
                // Usage is counted here and only written to the store at status changes.
                record.usage = self.ledger.record().usage;
                self.ledger = TaskLedger::new(record);
                self.deadlines.retain(|id, _| {
                    self.ledger
                        .subtask(id)
                        .is_some_and(|s| s.status.is_in_flight())
                });
                self.retry_at.retain(|id, _| {
                    self.ledger
                        .subtask(id)
                        .is_some_and(|s| s.status == SubtaskStatus::Pending)
                });
                let ledger = &self.ledger;
                self.attempt_gates.retain(|id, (circuit, trial)| {
                    let keep = ledger.subtask(id).is_some_and(|s| s.status.is_in_flight());
                    if !keep && *trial {
                        circuit.abandon_trial();
                    }
                    keep
                });
                Ok(())
            }
            None => Err(End::Failed("the task disappeared from the store".into())),
        }
    }

    /// Sets the task's status and checkpoints the driver's state, recording
    /// `note` (an orchestrator's step) with them: the three writes go to the
    /// store at once, so the task waits for one commit, not three.
    async fn set_status(
        &mut self,
        status: TaskStatus,
        note: Option<(EventKind, String)>,
    ) -> Result<(), End> {
        let now = troupe_core::time::now();
        self.ledger.set_status(status, now);
        ::metrics::counter!(TASKS_TOTAL, "status" => status.as_str()).increment(1);
        let update = TaskUpdate {
            usage: Some(self.ledger.record().usage),
            at: now,
            fence: self.fence(),
            ..TaskUpdate::status(status)
        };
        let entry =
            note.map(|(event, detail)| self.entry(None, None, event, detail, Usage::default()));
        let checkpoint = self.take_checkpoint()?;
        let shared = &self.shared;
        let stores = &shared.stores;
        let (_, _, recorded) = tokio::try_join!(
            stores.tasks.update_task(self.ledger.id(), &update),
            resume::save(stores, checkpoint.as_ref()),
            async {
                match entry {
                    Some(entry) => shared.recorder.record(entry).await.map(Some),
                    None => Ok(None),
                }
            }
        )?;
        if let Some(recorded) = recorded {
            self.last_step = self.last_step.max(recorded.step);
        }
        Ok(())
    }

    /// The fencing token of this driver's writes, if it holds a lease.
    fn fence(&self) -> Option<u64> {
        (self.epoch > 0).then_some(self.epoch)
    }

    /// Appends a progress entry: by `agent` (the orchestrator if `None`), about a subtask's attempt if given.
    async fn record(
        &mut self,
        agent: Option<&AgentId>,
        subtask: Option<(&SubtaskId, u32)>,
        event: EventKind,
        detail: String,
    ) -> Result<(), End> {
        self.record_spent(agent, subtask, event, detail, Usage::default())
            .await
    }

    /// Records a step with the tokens `agent` spent on it; a step of the
    /// orchestrator's own also carries what it spent since its last entry.
    async fn record_spent(
        &mut self,
        agent: Option<&AgentId>,
        subtask: Option<(&SubtaskId, u32)>,
        event: EventKind,
        detail: String,
        usage: Usage,
    ) -> Result<(), End> {
        let entry = self.entry(agent, subtask, event, detail, usage);
        let stored = self.shared.recorder.record(entry).await?;
        self.last_step = self.last_step.max(stored.step);
        Ok(())
    }

    /// The progress entry of a step (see [`record_spent`](Self::record_spent)):
    /// one of the orchestrator's own takes the tokens not yet recorded.
    fn entry(
        &mut self,
        agent: Option<&AgentId>,
        subtask: Option<(&SubtaskId, u32)>,
        event: EventKind,
        detail: String,
        mut usage: Usage,
    ) -> NewProgressEntry {
        if agent.is_none() {
            usage += std::mem::take(&mut self.unrecorded);
        }
        let agent = agent.unwrap_or(&self.shared.agent);
        let task_id = self.ledger.id();
        let entry = match subtask {
            Some((id, attempt)) => {
                NewProgressEntry::subtask(task_id, agent, id, attempt, event, detail)
            }
            None => NewProgressEntry::task(task_id, agent, event, detail),
        };
        entry.with_usage(usage).with_fence(self.fence())
    }

    /// Counts tokens the orchestrator spent itself.
    fn spent(&mut self, usage: Usage) {
        self.ledger.add_usage(usage);
        self.unrecorded += usage;
    }

    async fn finish(
        &mut self,
        status: TaskStatus,
        result: Option<String>,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let task_id = self.ledger.id();
        ::metrics::counter!(TASKS_TOTAL, "status" => status.as_str()).increment(1);
        // The ledger in memory first: the caller sees the end even if the store fails.
        let cancelled = if status == TaskStatus::Completed {
            Vec::new()
        } else {
            self.ledger.cancel_open()
        };
        let now = troupe_core::time::now();
        let detail = match (&result, &error) {
            (Some(answer), _) => format!("answer of {} characters", answer.chars().count()),
            (None, Some(reason)) => reason.clone(),
            (None, None) => String::new(),
        };
        self.ledger
            .finish(status, result.clone(), error.clone(), now);
        let tasks = &self.shared.stores.tasks;
        for written in
            join_all(cancelled.iter().map(|id| {
                tasks.update_subtask(task_id, id, &SubtaskChange::Cancelled, self.fence())
            }))
            .await
        {
            written?;
        }
        let update = TaskUpdate {
            status: Some(status),
            result,
            error,
            usage: Some(self.ledger.record().usage),
            at: now,
            fence: self.fence(),
        };
        let event = match status {
            TaskStatus::Completed => EventKind::TaskCompleted,
            TaskStatus::Cancelled => EventKind::TaskCancelled,
            _ => EventKind::TaskFailed,
        };
        let entry = NewProgressEntry::task(task_id, &self.shared.agent, event, detail)
            .with_usage(std::mem::take(&mut self.unrecorded))
            .with_fence(self.fence());
        // The end and its entry at once: both carry the lease epoch, so if
        // another coordinator has the task neither is stored.
        tokio::try_join!(
            tasks.update_task(task_id, &update),
            self.shared.recorder.record(entry)
        )?;
        Ok(())
    }
}
