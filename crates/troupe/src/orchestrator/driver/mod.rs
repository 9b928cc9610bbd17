//! The driver of one task: Magentic-One's loops over a DAG of subtasks.
//!
//! Outer loop: plan, and when the run is blocked (a subtask failed for good)
//! or stalls (too many failures in a row with no completion), re-plan with
//! what was learned, a bounded number of times. Inner loop: dispatch every
//! ready subtask (its dependencies completed), then wait for the next reply,
//! attempt deadline or retry time, and apply it to the task ledger. Every
//! change is written to the store before the message that caused it is
//! acknowledged, and every step goes into the progress ledger.
//!
//! The driver decides; two parts keep its state and its writes straight:
//! [`attempts`] (each attempt's deadline, span and breaker gate, and when a
//! failed subtask may be tried again) and [`journal`] (every write, fenced,
//! with the progress steps, checkpoints and tokens that go with it).

/// A named point where a test can make this coordinator crash (feature
/// `failpoints`, configured with `fail::cfg(NAME, "1*return")`): the driver
/// stops there at once, writing nothing more and keeping its lease, as if
/// its process had died. The names: `driver::planned` (a plan was stored),
/// `driver::dispatched` (subtasks were stored as dispatched and published),
/// `driver::result_stored` (a worker's result was stored, not yet acknowledged),
/// `driver::ending` (the answer is written, the task's end not yet stored).
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, |_| Err(End::Crashed));
    };
}

mod answer;
mod attempts;
mod dispatch;
mod journal;
mod planning;
mod replies;
mod resume;

pub(super) use resume::{DriverState, resumed_record};

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use troupe_core::SubtaskId;
use troupe_core::bus::Delivery;
use troupe_core::ledger::{Applied, EventKind, SubtaskChange, TaskLedger};
use troupe_core::store::{StoreError, TaskUpdate};
use troupe_core::task::{SubtaskStatus, TaskRecord, TaskStatus, Usage};

use self::attempts::Attempts;
use self::journal::{Journal, Step};
use super::Shared;
use crate::config::duration::format as fmt;
use crate::telemetry::events::{TaskEnded, TaskStatusReached, emit};

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
    /// A test crashed the coordinator at a failure point (`crash_point!`).
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    Crashed,
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

/// What stops a driver besides its task's end.
pub(super) struct Signals {
    /// The task was cancelled.
    pub(super) cancel: CancellationToken,
    /// The process is stopping.
    pub(super) shutdown: CancellationToken,
    /// The lease's signals.
    pub(super) lease: LeaseSignals,
}

pub(super) struct Driver {
    shared: Arc<Shared>,
    ledger: TaskLedger,
    attempts: Attempts,
    journal: Journal,
    inbox: mpsc::UnboundedReceiver<Delivery>,
    signals: Signals,
    /// Failures since the last completion (Magentic-One's stall counter).
    stalls: u32,
    replans: u32,
    task_deadline: Instant,
    /// Replies received while a long call ran, oldest first.
    held: VecDeque<Delivery>,
    /// The request the task came from, passed on to the workers.
    request_id: String,
    /// When this process took the task (for its duration metric).
    started: std::time::Instant,
    /// For a taken-over task: the step of the checkpoint it resumes from.
    resumed_from: Option<u64>,
}

impl Driver {
    pub(super) fn new(
        shared: Arc<Shared>,
        start: DriverStart,
        inbox: mpsc::UnboundedReceiver<Delivery>,
        signals: Signals,
    ) -> Self {
        // The time limit counts from submission, whichever coordinator drives the task.
        let age = (troupe_core::time::now() - start.record.created_at)
            .to_std()
            .unwrap_or_default();
        let left = shared.config.orchestrator.task_timeout.saturating_sub(age);
        let task_deadline = Instant::now() + left;
        let resumed_from = start.resumed.is_some().then_some(start.last_step);
        let state = start.resumed.unwrap_or_default();
        let journal = Journal::new(
            shared.clone(),
            start.record.id,
            start.epoch,
            start.last_step,
        );
        Self {
            shared,
            ledger: TaskLedger::new(start.record),
            attempts: Attempts::default(),
            journal,
            inbox,
            signals,
            stalls: state.stalls,
            replans: state.replans,
            task_deadline,
            held: VecDeque::new(),
            request_id: start.request_id,
            started: std::time::Instant::now(),
            resumed_from,
        }
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
                self.journal.release().await;
                return self.ledger.into_record();
            }
            Err(End::Lost) => {
                tracing::warn!("another coordinator took the task over; leaving it to them");
                self.attempts.supersede_all();
                return self.ledger.into_record();
            }
            Err(End::Crashed) => {
                tracing::error!("crashed at a failure point; the lease lapses by itself");
                return self.ledger.into_record();
            }
        };
        if let Err(End::Crashed) = self.before_end() {
            tracing::error!("crashed at a failure point before storing the end");
            return self.ledger.into_record();
        }
        // The recorder logs the end with its reason; the span gets the status.
        if status == TaskStatus::Failed {
            tracing::Span::current().record("otel.status_code", "ERROR");
        }
        self.attempts.supersede_all();
        self.signals
            .lease
            .ending
            .store(true, std::sync::atomic::Ordering::Relaxed);
        emit(TaskEnded {
            status,
            elapsed: self.started.elapsed(),
        });
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
            let note = Step::task(EventKind::PlanningStarted, "asking the LLM for a plan");
            self.set_status(TaskStatus::Planning, Some(note)).await?;
            let plan = self.ask_plan(None).await?;
            self.install(plan).await?;
            crash_point!("driver::planned");
        } else if self.ledger.record().status != TaskStatus::Running {
            self.set_status(TaskStatus::Running, None).await?;
        }
        loop {
            self.dispatch_ready().await?;
            self.replan_if_stalled().await?;
            if self.ledger.is_done() {
                break;
            }
            if self.ledger.in_flight() == 0 && !self.attempts.any_waiting() {
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
            if self.journal.turn_done() {
                let state = self.state();
                self.journal.checkpoint(&state).await?;
            }
            self.replan_if_stalled().await?;
        }
        self.synthesize().await
    }

    /// The failure point before the task's end is stored.
    fn before_end(&self) -> Result<(), End> {
        crash_point!("driver::ending");
        Ok(())
    }

    async fn wait(&mut self) -> Wake {
        if let Some(d) = self.held.pop_front() {
            return Wake::Reply(Box::new(d));
        }
        let wake_at = self
            .attempts
            .next_wake()
            .map_or(self.task_deadline, |t| t.min(self.task_deadline));
        let signals = &self.signals;
        tokio::select! {
            biased;
            () = signals.shutdown.cancelled() => Wake::Shutdown,
            () = signals.lease.lost.cancelled() => Wake::Lost,
            () = signals.cancel.cancelled() => Wake::Cancelled,
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
        let signals = &self.signals;
        loop {
            tokio::select! {
                biased;
                () = signals.shutdown.cancelled() => return Err(End::Shutdown),
                () = signals.lease.lost.cancelled() => return Err(End::Lost),
                () = signals.cancel.cancelled() => return Err(End::Cancelled),
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

    /// Counts tokens the orchestrator spent itself (planning, synthesis).
    fn spent(&mut self, usage: Usage) {
        self.ledger.add_usage(usage);
        self.journal.spent(usage);
    }

    /// The driver's own state, as a checkpoint keeps it.
    fn state(&self) -> DriverState {
        DriverState {
            request_id: self.request_id.clone(),
            stalls: self.stalls,
            replans: self.replans,
            usage: self.ledger.record().usage,
        }
    }

    /// Applies a change to the ledger and, if it changed, writes it to the
    /// store together with the step that tells of it. If the store turns out
    /// not to take the change (it disagreed with the ledger: someone else
    /// changed the task), the ledger is reloaded from the store. True if the
    /// change was made.
    async fn apply_recorded(
        &mut self,
        id: &SubtaskId,
        change: &SubtaskChange,
        step: Step<'_>,
    ) -> Result<bool, End> {
        if !matches!(self.ledger.apply(id, change), Ok(Applied::Changed)) {
            return Ok(false);
        }
        let stored = self.journal.write_step(id, change, step).await?;
        if stored == Applied::Unchanged {
            self.resync().await?;
        }
        Ok(stored.changed())
    }

    /// Reloads the ledger from the store after they disagreed (someone else
    /// changed the task); the store is the source of truth.
    async fn resync(&mut self) -> Result<(), End> {
        tracing::warn!("the task ledger and the store disagree; reloading from the store");
        let Some(mut record) = self.shared.stores.tasks.get_task(self.ledger.id()).await? else {
            return Err(End::Failed("the task disappeared from the store".into()));
        };
        // Usage is counted here and only written to the store at status changes.
        record.usage = self.ledger.record().usage;
        self.ledger = TaskLedger::new(record);
        let ledger = &self.ledger;
        self.attempts.retain(
            |id| ledger.subtask(id).is_some_and(|s| s.status.is_in_flight()),
            |id| {
                ledger
                    .subtask(id)
                    .is_some_and(|s| s.status == SubtaskStatus::Pending)
            },
        );
        Ok(())
    }

    /// Sets the task's status and checkpoints the driver's state, recording
    /// `note` (an orchestrator's step) with them, all at once.
    async fn set_status(&mut self, status: TaskStatus, note: Option<Step<'_>>) -> Result<(), End> {
        self.ledger.set_status(status, troupe_core::time::now());
        emit(TaskStatusReached(status));
        let state = self.state();
        let usage = self.ledger.record().usage;
        self.journal.set_status(status, usage, &state, note).await?;
        Ok(())
    }

    /// Ends the task: the ledger in memory first (the caller sees the end
    /// even if the store fails), then the store.
    async fn finish(
        &mut self,
        status: TaskStatus,
        result: Option<String>,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        emit(TaskStatusReached(status));
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
        let update = TaskUpdate {
            status: Some(status),
            result,
            error,
            usage: Some(self.ledger.record().usage),
            at: now,
            fence: None,
        };
        let event = match status {
            TaskStatus::Completed => EventKind::TaskCompleted,
            TaskStatus::Cancelled => EventKind::TaskCancelled,
            _ => EventKind::TaskFailed,
        };
        self.journal
            .finish(&cancelled, update, Step::task(event, detail))
            .await
    }
}
