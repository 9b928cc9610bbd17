//! The driver of one task: Magentic-One's loops over a DAG of subtasks.
//!
//! Outer loop: plan, and when the run is blocked (a subtask failed for good)
//! or stalls (too many failures in a row with no completion), re-plan with
//! what was learned, a bounded number of times. Inner loop: dispatch every
//! ready subtask (its dependencies completed), then wait for the next reply,
//! attempt deadline or retry time, and apply it to the task ledger. Every
//! change is written to the store before the message that caused it is
//! acknowledged, and every step goes into the progress ledger.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use troupe_core::bus::{Delivery, topics};
use troupe_core::envelope::{
    DependencyResult, Envelope, MessageKind, Progress, TaskAssign, TaskError, TaskResult,
    role_address,
};
use troupe_core::ledger::{Applied, EventKind, NewProgressEntry, SubtaskChange, TaskLedger};
use troupe_core::llm::{CallKind, ChatMessage, ChatRequest};
use troupe_core::plan::{Plan, PlanContext};
use troupe_core::store::{StoreError, TaskUpdate};
use troupe_core::task::{SubtaskStatus, TaskRecord, TaskStatus, Usage};
use troupe_core::{AgentId, SubtaskId};

use super::Shared;
use super::planner::PlanAsk;
use crate::config::duration::format as fmt;
use crate::{backoff, llm_call, prompts};

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
}

impl From<StoreError> for End {
    fn from(e: StoreError) -> Self {
        End::Store(e)
    }
}

/// What woke the driver.
enum Wake {
    Shutdown,
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
}

impl Driver {
    pub(super) fn new(
        shared: Arc<Shared>,
        record: TaskRecord,
        inbox: mpsc::UnboundedReceiver<Delivery>,
        cancel: CancellationToken,
        shutdown: CancellationToken,
    ) -> Self {
        let task_deadline = Instant::now() + shared.config.orchestrator.task_timeout;
        Self {
            shared,
            ledger: TaskLedger::new(record),
            inbox,
            cancel,
            shutdown,
            deadlines: HashMap::new(),
            retry_at: HashMap::new(),
            stalls: 0,
            replans: 0,
            task_deadline,
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
                return self.ledger.into_record();
            }
        };
        match (status, &error) {
            (TaskStatus::Completed, _) => tracing::info!("task completed"),
            (TaskStatus::Cancelled, _) => tracing::info!("task cancelled"),
            (_, reason) => tracing::warn!(status = %status, reason = ?reason, "task failed"),
        }
        if let Err(e) = self.finish(status, result, error).await {
            tracing::error!(error = %e, "could not store the end of the task");
        }
        self.ledger.into_record()
    }

    async fn drive(&mut self) -> Result<String, End> {
        self.set_status(TaskStatus::Planning).await?;
        self.record(
            None,
            None,
            EventKind::PlanningStarted,
            "asking the LLM for a plan".into(),
        )
        .await?;
        let plan = self.ask_plan(None).await?;
        self.install(plan).await?;
        loop {
            self.dispatch_ready().await?;
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
                Wake::Cancelled => return Err(End::Cancelled),
                Wake::InboxClosed => return Err(End::Shutdown),
                Wake::Reply(d) => self.on_reply(*d).await?,
                Wake::Timer => self.on_timer().await?,
            }
        }
        self.synthesize().await
    }

    async fn wait(&mut self) -> Wake {
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
            () = self.cancel.cancelled() => Wake::Cancelled,
            d = self.inbox.recv() => d.map_or(Wake::InboxClosed, |d| Wake::Reply(Box::new(d))),
            () = tokio::time::sleep_until(wake_at) => Wake::Timer,
        }
    }

    /// Runs `fut` unless the task is cancelled, the process stops, or the task's time runs out.
    async fn bounded<T>(&self, fut: impl Future<Output = T>) -> Result<T, End> {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Err(End::Shutdown),
            () = self.cancel.cancelled() => Err(End::Cancelled),
            () = tokio::time::sleep_until(self.task_deadline) => Err(self.timed_out()),
            v = fut => Ok(v),
        }
    }

    fn timed_out(&self) -> End {
        End::Failed(format!(
            "the task did not finish within {}",
            fmt(self.shared.config.orchestrator.task_timeout)
        ))
    }

    // ----- planning -----

    async fn ask_plan(&mut self, situation: Option<String>) -> Result<Plan, End> {
        let first = situation.is_none();
        let revision = if first {
            0
        } else {
            self.ledger.record().plan_revision + 1
        };
        let context = PlanContext {
            used_ids: self.ledger.used_ids(),
            completed_ids: self.ledger.completed_ids(),
        };
        let message = situation.unwrap_or_else(|| prompts::plan_user(&self.ledger.record().goal));
        let ask = PlanAsk {
            task_id: self.ledger.id(),
            message,
            revision,
            context: &context,
        };
        let shared = self.shared.clone();
        let mut usage = Usage::default();
        let planned = self
            .bounded(shared.planner.plan(
                shared.llm.as_ref(),
                &shared.config,
                &shared.recorder,
                ask,
                &mut usage,
            ))
            .await;
        self.ledger.add_usage(usage);
        planned?.map_err(|failure| End::Failed(failure.reason))
    }

    async fn install(&mut self, plan: Plan) -> Result<(), End> {
        self.ledger.install_plan(&plan);
        let record = self.ledger.record();
        let revision = record.plan_revision;
        let subtasks: Vec<_> = self.ledger.current().cloned().collect();
        self.shared
            .stores
            .tasks
            .save_plan(record.id, revision, &record.facts, &subtasks)
            .await?;
        if self.ledger.record().status != TaskStatus::Running {
            self.set_status(TaskStatus::Running).await?;
        }
        let steps: Vec<String> = plan
            .subtasks
            .iter()
            .map(|s| {
                let deps: Vec<&str> = s.depends_on.iter().map(SubtaskId::as_str).collect();
                if deps.is_empty() {
                    format!("{} ({})", s.id, s.role)
                } else {
                    format!("{} ({}) after {}", s.id, s.role, deps.join("+"))
                }
            })
            .collect();
        let detail = format!("plan revision {revision}: {}", steps.join(", "));
        self.record(None, None, EventKind::PlanAccepted, detail)
            .await?;
        Ok(())
    }

    async fn replan_or_fail(&mut self, reason: String) -> Result<(), End> {
        let max = self.shared.config.orchestrator.max_replans;
        if self.replans >= max {
            return Err(End::Failed(if max == 0 {
                reason
            } else {
                format!("{reason} (after {} re-plans)", self.replans)
            }));
        }
        self.replans += 1;
        self.record(None, None, EventKind::Replanning, reason.clone())
            .await?;
        let budget = self.shared.config.orchestrator.prompt_budget_chars;
        let situation = prompts::replan_user(&self.ledger, &reason, budget);
        let plan = self.ask_plan(Some(situation)).await?;
        self.install(plan).await?;
        self.deadlines.clear();
        self.retry_at.clear();
        self.stalls = 0;
        Ok(())
    }

    fn blocked_reason(&self) -> String {
        let failed: Vec<String> = self
            .ledger
            .failed()
            .map(|s| {
                format!(
                    "subtask {} ({}) failed: {}",
                    s.id,
                    s.role,
                    s.last_error.as_deref().unwrap_or("unknown error")
                )
            })
            .collect();
        if failed.is_empty() {
            "no subtask can run".to_owned()
        } else {
            failed.join("; ")
        }
    }

    // ----- dispatch -----

    async fn dispatch_ready(&mut self) -> Result<(), End> {
        let now = Instant::now();
        let ready: Vec<SubtaskId> = self
            .ledger
            .ready()
            .into_iter()
            .filter(|s| self.retry_at.get(s).is_none_or(|at| *at <= now))
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let timeout = self.shared.config.orchestrator.subtask_timeout;
        let mut sends = Vec::with_capacity(ready.len());
        for id in ready {
            self.retry_at.remove(&id);
            let attempt = self.ledger.subtask(&id).map_or(1, |s| s.attempts + 1);
            let change = SubtaskChange::Dispatched { attempt };
            if !matches!(self.ledger.apply(&id, &change), Ok(Applied::Changed)) {
                continue;
            }
            let (role, envelope) = self.assignment(&id, attempt)?;
            self.deadlines.insert(id.clone(), now + timeout);
            sends.push((id, attempt, role, envelope, change));
        }
        // One group commit for every dispatch and its ledger entry.
        let shared = &self.shared;
        let task_id = self.ledger.id();
        let writes = sends
            .iter()
            .map(|(id, attempt, role, _, change)| async move {
                let entry = NewProgressEntry::subtask(
                    task_id,
                    &shared.agent,
                    id,
                    *attempt,
                    EventKind::SubtaskDispatched,
                    format!("sent to the {role} workers"),
                );
                let (applied, _) = tokio::try_join!(
                    shared.stores.tasks.update_subtask(task_id, id, change),
                    shared.recorder.record(entry)
                )?;
                Ok::<_, StoreError>(applied)
            });
        let mut diverged = false;
        for written in join_all(writes).await {
            diverged |= written? == Applied::Unchanged;
        }
        if diverged {
            self.resync().await?;
        }
        for (id, attempt, role, envelope, _) in sends {
            // A failed publish may have led to a re-plan that superseded the rest.
            let still_due = self
                .ledger
                .subtask(&id)
                .is_some_and(|s| s.status == SubtaskStatus::Dispatched && s.attempts == attempt);
            if !still_due {
                continue;
            }
            if let Err(e) = self
                .shared
                .bus
                .publish(&topics::role(&role), envelope)
                .await
            {
                self.on_attempt_failed(
                    &id,
                    attempt,
                    format!("could not publish the subtask: {e}"),
                    true,
                    Usage::default(),
                )
                .await?;
            }
        }
        Ok(())
    }

    fn assignment(
        &self,
        id: &SubtaskId,
        attempt: u32,
    ) -> Result<(troupe_core::Role, Envelope), End> {
        let record = self.ledger.record();
        let Some(s) = self.ledger.subtask(id) else {
            return Err(End::Failed(format!(
                "internal error: subtask {id} vanished from the ledger"
            )));
        };
        let dependencies = s
            .depends_on
            .iter()
            .filter_map(|d| self.ledger.subtask(d))
            .map(|d| DependencyResult {
                id: d.id.clone(),
                role: d.role.clone(),
                title: d.title.clone(),
                result: d.result.clone().unwrap_or_default(),
            })
            .collect();
        let timeout = self.shared.config.orchestrator.subtask_timeout;
        let assign = TaskAssign {
            goal: record.goal.clone(),
            role: s.role.clone(),
            title: s.title.clone(),
            instruction: s.instruction.clone(),
            dependencies,
            facts: record.facts.clone(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            reply_to: self.shared.inbox.clone(),
        };
        let envelope = Envelope::new(
            MessageKind::TaskAssign,
            self.shared.agent.clone(),
            role_address(&s.role),
            &assign,
        )
        .map_err(|e| End::Failed(format!("internal error: {e}")))?
        .about(record.id, id, attempt);
        Ok((s.role.clone(), envelope))
    }

    // ----- replies and timers -----

    async fn on_reply(&mut self, delivery: Delivery) -> Result<(), End> {
        let verdict = self.apply_reply(&delivery).await?;
        let acked = match verdict {
            Ok(()) => delivery.ack().await,
            Err(reason) => {
                tracing::warn!(message_id = %delivery.envelope.id, %reason, "unusable reply set aside");
                delivery.dead_letter(&reason).await
            }
        };
        if let Err(e) = acked {
            tracing::warn!(error = %e, "could not acknowledge a reply");
        }
        Ok(())
    }

    /// Applies a worker's reply; `Ok(Err(reason))` means the reply is unusable.
    async fn apply_reply(&mut self, delivery: &Delivery) -> Result<Result<(), String>, End> {
        let env = &delivery.envelope;
        let (task_id, id, attempt) = match env.subtask_ref() {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if task_id != self.ledger.id() {
            return Ok(Err(format!(
                "reply for task {task_id} reached task {}",
                self.ledger.id()
            )));
        }
        let Some(current) = self.ledger.subtask(id) else {
            return Ok(Err(format!("the task has no subtask {id}")));
        };
        let in_flight = current.attempts == attempt && current.status.is_in_flight();
        let id = id.clone();
        let from = env.from.clone();
        match env.kind {
            MessageKind::Progress => match env.decode::<Progress>() {
                Ok(Progress::Started) => {
                    let change = SubtaskChange::Started {
                        attempt,
                        agent: from.clone(),
                    };
                    if self.apply(&id, &change).await? {
                        let detail = format!("started by {from}");
                        self.record(
                            Some(&from),
                            Some((&id, attempt)),
                            EventKind::SubtaskStarted,
                            detail,
                        )
                        .await?;
                    }
                }
                Ok(Progress::Note { message }) => {
                    if in_flight {
                        self.record(
                            Some(&from),
                            Some((&id, attempt)),
                            EventKind::SubtaskProgress,
                            message,
                        )
                        .await?;
                    }
                }
                Err(e) => return Ok(Err(e.to_string())),
            },
            MessageKind::TaskResult => match env.decode::<TaskResult>() {
                Ok(result) => self.on_result(&id, attempt, &from, result).await?,
                Err(e) => return Ok(Err(e.to_string())),
            },
            MessageKind::TaskError => match env.decode::<TaskError>() {
                Ok(e) => {
                    self.on_attempt_failed(&id, attempt, e.message, e.retryable, e.usage)
                        .await?;
                }
                Err(e) => return Ok(Err(e.to_string())),
            },
            other => {
                return Ok(Err(format!(
                    "unexpected {other} message on the orchestrator's inbox"
                )));
            }
        }
        Ok(Ok(()))
    }

    async fn on_result(
        &mut self,
        id: &SubtaskId,
        attempt: u32,
        from: &AgentId,
        result: TaskResult,
    ) -> Result<(), End> {
        let detail = prompts::clip(&result.output, 500);
        let change = SubtaskChange::Completed {
            attempt,
            agent: from.clone(),
            result: result.output,
        };
        if !self.apply(id, &change).await? {
            tracing::debug!(subtask_id = %id, attempt, "duplicate or stale result ignored");
            return Ok(());
        }
        self.ledger.add_usage(result.usage);
        self.deadlines.remove(id);
        self.stalls = 0;
        self.record(
            Some(from),
            Some((id, attempt)),
            EventKind::SubtaskCompleted,
            detail,
        )
        .await
    }

    async fn on_attempt_failed(
        &mut self,
        id: &SubtaskId,
        attempt: u32,
        error: String,
        retryable: bool,
        usage: Usage,
    ) -> Result<(), End> {
        let shared = self.shared.clone();
        let config = &shared.config.orchestrator;
        let retry = retryable && attempt < config.max_attempts;
        let change = SubtaskChange::AttemptFailed {
            attempt,
            error: error.clone(),
            retry,
        };
        if !self.apply(id, &change).await? {
            tracing::debug!(subtask_id = %id, attempt, "duplicate or stale failure ignored");
            return Ok(());
        }
        self.ledger.add_usage(usage);
        self.deadlines.remove(id);
        self.stalls += 1;
        if retry {
            let wait = backoff::delay(&config.retry, attempt, None);
            self.retry_at.insert(id.clone(), Instant::now() + wait);
            let detail = format!(
                "attempt {attempt} failed: {error}; retrying in {}",
                fmt(wait)
            );
            self.record(None, Some((id, attempt)), EventKind::AttemptFailed, detail)
                .await?;
        } else {
            let detail = if retryable {
                format!("failed after {attempt} attempts: {error}")
            } else {
                format!("failed with an error another attempt cannot fix: {error}")
            };
            let role = self
                .ledger
                .subtask(id)
                .map(|s| s.role.to_string())
                .unwrap_or_default();
            self.ledger.add_fact(format!(
                "Subtask {id} ({role}) failed: {}",
                prompts::clip(&error, 300)
            ));
            self.record(None, Some((id, attempt)), EventKind::SubtaskFailed, detail)
                .await?;
        }
        let max_stalls = self.shared.config.orchestrator.max_stalls;
        if self.stalls > max_stalls {
            let reason = format!(
                "{} failures in a row with no subtask completing",
                self.stalls
            );
            self.record(None, None, EventKind::Stalled, reason.clone())
                .await?;
            self.replan_or_fail(reason).await?;
        }
        Ok(())
    }

    async fn on_timer(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if now >= self.task_deadline {
            return Err(self.timed_out());
        }
        let expired: Vec<SubtaskId> = self
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let timeout = fmt(self.shared.config.orchestrator.subtask_timeout);
        for id in expired {
            self.deadlines.remove(&id);
            let attempt = self.ledger.subtask(&id).map_or(0, |s| s.attempts);
            let error = format!("no result within {timeout}");
            self.on_attempt_failed(&id, attempt, error, true, Usage::default())
                .await?;
        }
        // Retries that are due are dispatched by the next `dispatch_ready`.
        Ok(())
    }

    // ----- the answer -----

    async fn synthesize(&mut self) -> Result<String, End> {
        let results: Vec<DependencyResult> = self
            .ledger
            .completed()
            .map(|s| DependencyResult {
                id: s.id.clone(),
                role: s.role.clone(),
                title: s.title.clone(),
                result: s.result.clone().unwrap_or_default(),
            })
            .collect();
        let detail = format!("writing the final answer from {} results", results.len());
        self.record(None, None, EventKind::SynthesisStarted, detail)
            .await?;
        let shared = self.shared.clone();
        let goal = self.ledger.record().goal.clone();
        let task_id = self.ledger.id();
        let build = |budget: usize| {
            let mut request = ChatRequest::new(
                CallKind::Synthesize,
                vec![
                    ChatMessage::system(prompts::synthesis_system()),
                    ChatMessage::user(prompts::synthesis_user(&goal, &results, budget)),
                ],
            );
            request.temperature = shared.config.llm.temperature;
            request.max_tokens = shared.config.llm.max_tokens;
            request.meta.task_id = Some(task_id);
            request
        };
        let budget = shared.config.orchestrator.prompt_budget_chars;
        let shrinkable = !results.is_empty();
        let call = llm_call::call_shrinking(
            shared.llm.as_ref(),
            &shared.config.llm,
            budget,
            shrinkable,
            build,
        );
        let outcome = self.bounded(call).await?;
        if let Ok(reply) = &outcome.result {
            self.ledger.add_usage(reply.usage);
        }
        for e in &outcome.retried {
            self.shared
                .recorder
                .note(
                    task_id,
                    EventKind::LlmError,
                    format!("synthesis call failed, retrying: {e}"),
                )
                .await;
        }
        match outcome.result {
            Ok(reply) if !reply.content.trim().is_empty() => Ok(reply.content.trim().to_owned()),
            Ok(_) => Err(End::Failed("the LLM's final answer was empty".into())),
            Err(e) => {
                self.shared
                    .recorder
                    .note(
                        task_id,
                        EventKind::LlmError,
                        format!("synthesis call failed: {e}"),
                    )
                    .await;
                Err(End::Failed(format!(
                    "the final answer could not be written: {e}"
                )))
            }
        }
    }

    // ----- writing -----

    /// Applies a change to the ledger and, if it changed, to the store.
    async fn apply(&mut self, id: &SubtaskId, change: &SubtaskChange) -> Result<bool, End> {
        if !matches!(self.ledger.apply(id, change), Ok(Applied::Changed)) {
            return Ok(false);
        }
        let stored = self
            .shared
            .stores
            .tasks
            .update_subtask(self.ledger.id(), id, change)
            .await?;
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
                Ok(())
            }
            None => Err(End::Failed("the task disappeared from the store".into())),
        }
    }

    async fn set_status(&mut self, status: TaskStatus) -> Result<(), End> {
        let now = troupe_core::time::now();
        self.ledger.set_status(status, now);
        let update = TaskUpdate {
            usage: Some(self.ledger.record().usage),
            at: now,
            ..TaskUpdate::status(status)
        };
        self.shared
            .stores
            .tasks
            .update_task(self.ledger.id(), &update)
            .await?;
        Ok(())
    }

    /// Appends a progress entry: by `agent` (the orchestrator if `None`), about a subtask's attempt if given.
    async fn record(
        &self,
        agent: Option<&AgentId>,
        subtask: Option<(&SubtaskId, u32)>,
        event: EventKind,
        detail: String,
    ) -> Result<(), End> {
        let agent = agent.unwrap_or(&self.shared.agent);
        let task_id = self.ledger.id();
        let entry = match subtask {
            Some((id, attempt)) => {
                NewProgressEntry::subtask(task_id, agent, id, attempt, event, detail)
            }
            None => NewProgressEntry::task(task_id, agent, event, detail),
        };
        self.shared.recorder.record(entry).await?;
        Ok(())
    }

    async fn finish(
        &mut self,
        status: TaskStatus,
        result: Option<String>,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let task_id = self.ledger.id();
        if status != TaskStatus::Completed {
            let cancelled = self.ledger.cancel_open();
            let tasks = &self.shared.stores.tasks;
            for written in join_all(
                cancelled
                    .iter()
                    .map(|id| tasks.update_subtask(task_id, id, &SubtaskChange::Cancelled)),
            )
            .await
            {
                written?;
            }
        }
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
        };
        self.shared
            .stores
            .tasks
            .update_task(task_id, &update)
            .await?;
        let event = match status {
            TaskStatus::Completed => EventKind::TaskCompleted,
            TaskStatus::Cancelled => EventKind::TaskCancelled,
            _ => EventKind::TaskFailed,
        };
        self.shared
            .recorder
            .record(NewProgressEntry::task(
                task_id,
                &self.shared.agent,
                event,
                detail,
            ))
            .await?;
        Ok(())
    }
}
