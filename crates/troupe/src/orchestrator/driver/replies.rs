//! Replies and timers: applying workers' messages, attempt failures, timeouts and stalls.

use super::{Driver, End};
use crate::config::duration::format as fmt;
use crate::{backoff, prompts};
use tokio::time::Instant;
use tracing::Instrument as _;
use troupe_core::bus::Delivery;
use troupe_core::envelope::{MessageKind, Progress, TaskError, TaskResult};
use troupe_core::ledger::{EventKind, SubtaskChange};
use troupe_core::task::Usage;
use troupe_core::{AgentId, SubtaskId};

impl Driver {
    pub(super) async fn on_reply(&mut self, delivery: Delivery) -> Result<(), End> {
        let span = match &delivery.envelope.subtask_id {
            Some(id) => self.attempt_span(id),
            None => tracing::Span::none(),
        };
        let verdict = self.apply_reply(&delivery).instrument(span).await?;
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
    pub(super) async fn apply_reply(
        &mut self,
        delivery: &Delivery,
    ) -> Result<Result<(), String>, End> {
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
                    let detail = format!("started by {from}");
                    self.apply_recorded(&id, &change, |d| {
                        d.entry(
                            Some(&from),
                            Some((&id, attempt)),
                            EventKind::SubtaskStarted,
                            detail,
                            Usage::default(),
                        )
                    })
                    .await?;
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
                    self.on_attempt_failed(
                        &id,
                        attempt,
                        e.message,
                        e.retryable,
                        Some((&from, e.usage)),
                    )
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

    pub(super) async fn on_result(
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
        let recorded = self
            .apply_recorded(id, &change, |d| {
                d.entry(
                    Some(from),
                    Some((id, attempt)),
                    EventKind::SubtaskCompleted,
                    detail,
                    result.usage,
                )
            })
            .await?;
        if !recorded {
            tracing::debug!(subtask_id = %id, attempt, "duplicate or stale result ignored");
            return Ok(());
        }
        self.ledger.add_usage(result.usage);
        self.deadlines.remove(id);
        self.close_attempt(id, "completed", false);
        self.gate_outcome(id, false);
        self.stalls = 0;
        Ok(())
    }

    pub(super) async fn on_attempt_failed(
        &mut self,
        id: &SubtaskId,
        attempt: u32,
        error: String,
        retryable: bool,
        reported: Option<(&AgentId, Usage)>,
    ) -> Result<(), End> {
        let (by, usage) = match reported {
            Some((agent, usage)) => (Some(agent), usage),
            None => (None, Usage::default()),
        };
        let shared = self.shared.clone();
        let config = &shared.config.orchestrator;
        let retry = retryable && attempt < config.max_attempts;
        let change = SubtaskChange::AttemptFailed {
            attempt,
            error: error.clone(),
            retry,
        };
        let wait = retry.then(|| backoff::delay(&config.retry, attempt, None));
        let (event, detail) = match wait {
            Some(wait) => (
                EventKind::AttemptFailed,
                format!(
                    "attempt {attempt} failed: {error}; retrying in {}",
                    fmt(wait)
                ),
            ),
            None if retryable => (
                EventKind::SubtaskFailed,
                format!("failed after {attempt} attempts: {error}"),
            ),
            None => (
                EventKind::SubtaskFailed,
                format!("failed with an error another attempt cannot fix: {error}"),
            ),
        };
        let recorded = self
            .apply_recorded(id, &change, |d| {
                d.entry(by, Some((id, attempt)), event, detail, usage)
            })
            .await?;
        if !recorded {
            tracing::debug!(subtask_id = %id, attempt, "duplicate or stale failure ignored");
            return Ok(());
        }
        self.ledger.add_usage(usage);
        self.deadlines.remove(id);
        self.close_attempt(id, if retry { "retry" } else { "failed" }, true);
        self.gate_outcome(id, retryable);
        self.stalls += 1;
        match wait {
            Some(wait) => {
                self.retry_at.insert(id.clone(), Instant::now() + wait);
            }
            None => {
                let role = self
                    .ledger
                    .subtask(id)
                    .map(|s| s.role.to_string())
                    .unwrap_or_default();
                self.ledger.add_fact(format!(
                    "Subtask {id} ({role}) failed: {}",
                    prompts::clip(&error, 300)
                ));
            }
        }
        Ok(())
    }

    /// Re-plans when too many failures came in a row (Magentic-One's stall
    /// counter). Called by the main loop, outside any attempt's span.
    pub(super) async fn replan_if_stalled(&mut self) -> Result<(), End> {
        if self.stalls <= self.shared.config.orchestrator.max_stalls {
            return Ok(());
        }
        let reason = format!(
            "{} failures in a row with no subtask completing",
            self.stalls
        );
        self.record(None, None, EventKind::Stalled, reason.clone())
            .await?;
        self.replan_or_fail(reason).await
    }

    pub(super) async fn on_timer(&mut self) -> Result<(), End> {
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
        let timeout = fmt(self.shared.config.orchestrator.subtask_timeout());
        for id in expired {
            self.deadlines.remove(&id);
            let attempt = self.ledger.subtask(&id).map_or(0, |s| s.attempts);
            let error = format!("no result within {timeout}");
            let span = self.attempt_span(&id);
            self.on_attempt_failed(&id, attempt, error, true, None)
                .instrument(span)
                .await?;
        }
        // Retries that are due are dispatched by the next `dispatch_ready`.
        Ok(())
    }
}
