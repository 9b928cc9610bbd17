//! The loop that runs one worker: take an assignment off the role's topic,
//! report that it started, run the worker under the assignment's deadline
//! while heartbeating the delivery, publish the result or the error, and only
//! then acknowledge. A message that is not a valid assignment for this role is
//! set aside in the dead letters, never run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use troupe_core::bus::{Bus, BusError, Delivery, topics};
use troupe_core::envelope::{MessageKind, Progress, TaskAssign, TaskError, TaskResult};
use troupe_core::{AgentId, Role};

use super::{Job, WorkError, Worker, WorkerContext};
use crate::config::WorkersConfig;
use crate::telemetry::events::{WorkerStarted, WorkerStopped, emit};
use crate::telemetry::propagation;

/// The longest deadline a worker accepts from an assignment.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// One worker agent serving one role.
pub(crate) struct Runner {
    pub(crate) agent: AgentId,
    pub(crate) role: Role,
    pub(crate) worker: Arc<dyn Worker>,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) config: WorkersConfig,
    /// Subtasks running now (read by the worker registry's heartbeat).
    pub(crate) busy: Arc<AtomicU32>,
}

impl Runner {
    /// Subscribes, then runs until `shutdown`; in-flight subtasks get the grace
    /// period to finish (cut short by `abandon`) and are handed back to the bus after it.
    pub(crate) async fn start(
        self,
        shutdown: CancellationToken,
        abandon: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        let topic = topics::role(&self.role);
        let mut sub = self
            .bus
            .subscribe(&topic, &topics::workers_group(&self.role), &self.agent)
            .await?;
        let span = tracing::info_span!("worker", agent_id = %self.agent, role = %self.role);
        let role_label = self.role.to_string();
        let this = Arc::new(self);
        let task = async move {
            let _active = ActiveWorker::new(role_label, this.agent.to_string());
            let slots = Arc::new(Semaphore::new(this.config.concurrency));
            let hand_back = CancellationToken::new();
            let mut running = JoinSet::new();
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let delivery = tokio::select! {
                    () = shutdown.cancelled() => break,
                    d = sub.next() => d,
                };
                match delivery {
                    Ok(d) => {
                        let this = this.clone();
                        let hand_back = hand_back.clone();
                        running.spawn(async move {
                            this.busy.fetch_add(1, Ordering::Relaxed);
                            this.handle(d, hand_back).await;
                            this.busy.fetch_sub(1, Ordering::Relaxed);
                            drop(permit);
                        });
                    }
                    Err(BusError::Closed) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "receiving from the bus failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                while running.try_join_next().is_some() {}
            }
            let drained = tokio::select! {
                finished = tokio::time::timeout(this.config.shutdown_grace, async {
                    while running.join_next().await.is_some() {}
                }) => finished.is_ok(),
                () = abandon.cancelled() => false,
            };
            if !drained {
                hand_back.cancel();
                while running.join_next().await.is_some() {}
            }
            tracing::debug!("worker stopped");
        };
        Ok(tokio::spawn(task.instrument(span)))
    }

    async fn handle(&self, delivery: Delivery, hand_back: CancellationToken) {
        let envelope = &delivery.envelope;
        let assignment = match (
            envelope.kind,
            envelope.decode::<TaskAssign>(),
            envelope.subtask_ref(),
        ) {
            (MessageKind::TaskAssign, Ok(a), Ok(_)) if a.role == self.role => a,
            (kind, decoded, reference) => {
                let reason = match (kind, decoded, reference) {
                    (MessageKind::TaskAssign, Ok(a), Ok(_)) => {
                        format!("assignment for role {}, not {}", a.role, self.role)
                    }
                    (MessageKind::TaskAssign, Err(e), _) => e.to_string(),
                    (MessageKind::TaskAssign, _, Err(e)) => e.to_string(),
                    (other, _, _) => format!("a {other} message on a role topic"),
                };
                tracing::warn!(message_id = %envelope.id, %reason, "unusable message set aside");
                if let Err(e) = delivery.dead_letter(&reason).await {
                    tracing::warn!(error = %e, "could not dead-letter a message");
                }
                return;
            }
        };
        let Ok((task_id, subtask_id, attempt)) = envelope.subtask_ref() else {
            return;
        };
        // A child of the orchestrator's dispatch span, in whatever process it runs.
        let span = tracing::info_span!(
            "subtask.run",
            otel.name = %format_args!("run {subtask_id}"),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            request_id = envelope.request_id.as_deref(),
            %task_id,
            %subtask_id,
            attempt = i64::from(attempt),
            agent_id = %self.agent,
            role = %self.role,
            outcome = tracing::field::Empty,
        );
        propagation::set_parent(&span, &envelope.trace_context);
        let ctx = WorkerContext {
            agent: self.agent.clone(),
            bus: self.bus.clone(),
            reply_to: assignment.reply_to.clone(),
            orchestrator: envelope.from.clone(),
            task_id,
            subtask_id: subtask_id.clone(),
            attempt,
            request_id: envelope.request_id.clone(),
        };
        let timeout = Duration::from_millis(assignment.timeout_ms).min(MAX_TIMEOUT);
        let job = Job {
            task_id,
            subtask_id: subtask_id.clone(),
            attempt,
            goal: assignment.goal,
            role: assignment.role,
            title: assignment.title,
            instruction: assignment.instruction,
            facts: assignment.facts,
            dependencies: assignment.dependencies,
            timeout,
        };
        let outcome_span = span.clone();
        async {
            tracing::info!(delivery_count = delivery.delivery_count, "subtask started");
            if let Err(e) = ctx.send(MessageKind::Progress, &Progress::Started).await {
                tracing::warn!(error = %e, "could not report the start");
            }
            let work = tokio::time::timeout(timeout, self.worker.run(&job, &ctx));
            let mut heartbeat = tokio::time::interval(self.config.heartbeat);
            heartbeat.tick().await;
            tokio::pin!(work);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut work => break outcome,
                    _ = heartbeat.tick() => {
                        if let Err(e) = delivery.extend().await {
                            tracing::warn!(error = %e, "could not extend the delivery");
                        }
                    }
                    () = hand_back.cancelled() => {
                        outcome_span.record("outcome", "handed_back");
                        tracing::info!("shutting down: handing the subtask back");
                        if let Err(e) = delivery.nack().await {
                            tracing::warn!(error = %e, "could not hand the subtask back");
                        }
                        return;
                    }
                }
            };
            let sent = match outcome {
                Ok(Ok(output)) => {
                    outcome_span.record("outcome", "completed");
                    tracing::info!(output_chars = output.text.chars().count(), "subtask completed");
                    let result = TaskResult { output: clean(output.text), usage: output.usage };
                    ctx.send(MessageKind::TaskResult, &result).await
                }
                Ok(Err(e)) => {
                    outcome_span.record("outcome", "failed");
                    outcome_span.record("otel.status_code", "ERROR");
                    send_error(&ctx, e).await
                }
                Err(_) => {
                    outcome_span.record("outcome", "timed_out");
                    outcome_span.record("otel.status_code", "ERROR");
                    send_error(&ctx, WorkError::retryable(format!("the worker took longer than {timeout:?}"))).await
                }
            };
            let acked = match sent {
                Ok(()) => delivery.ack().await,
                Err(e) => {
                    tracing::warn!(error = %e, "could not publish the outcome; the subtask will be redelivered");
                    delivery.nack().await
                }
            };
            if let Err(e) = acked {
                tracing::warn!(error = %e, "could not acknowledge the delivery");
            }
        }
        .instrument(span)
        .await;
    }
}

/// Tells of a worker's start and of its end, however it ends.
struct ActiveWorker {
    role: String,
    agent: String,
}

impl ActiveWorker {
    fn new(role: String, agent: String) -> Self {
        emit(WorkerStarted {
            role: &role,
            agent: &agent,
        });
        Self { role, agent }
    }
}

impl Drop for ActiveWorker {
    fn drop(&mut self) {
        emit(WorkerStopped {
            role: &self.role,
            agent: &self.agent,
        });
    }
}

async fn send_error(ctx: &WorkerContext, e: WorkError) -> Result<(), String> {
    tracing::info!(error = %e.message, retryable = e.retryable, "subtask attempt failed");
    let error = TaskError {
        message: clean(e.message),
        retryable: e.retryable,
        usage: e.usage,
    };
    ctx.send(MessageKind::TaskError, &error).await
}

/// Text fit for every store: NUL characters (which PostgreSQL refuses) replaced.
fn clean(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text
    }
}
