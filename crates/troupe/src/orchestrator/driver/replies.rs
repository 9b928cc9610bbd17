//! Replies and timers: applying workers' messages, attempt failures, timeouts and stalls.

use tokio::time::Instant;
use tracing::Instrument as _;
use troupe_core::bus::Delivery;
use troupe_core::envelope::{MessageKind, Progress, TaskError, TaskResult};
use troupe_core::ledger::{EventKind, SubtaskChange};
use troupe_core::task::Usage;
use troupe_core::{AgentId, SubtaskId};

use super::attempts::Outcome;
use super::journal::{By, Step};
use super::{Driver, End};
use crate::config::duration::format as fmt;
use crate::{backoff, prompts};

/// What became of a reply.
enum Verdict {
    /// It was applied (or was a duplicate with nothing left to apply): ack it.
    Applied,
    /// It can never be applied, for this reason: set it aside.
    Unusable(String),
}

/// A failed attempt, as the driver handles it.
pub(super) struct Failure<'a> {
    pub(super) id: &'a SubtaskId,
    pub(super) attempt: u32,
    pub(super) error: String,
    /// Whether another attempt may succeed.
    pub(super) retryable: bool,
    /// The worker that reported it and the tokens it spent; `None` when the
    /// orchestrator saw it (a timeout, a failed publish).
    pub(super) reported: Option<(&'a AgentId, Usage)>,
}

impl Driver {
    pub(super) async fn on_reply(&mut self, delivery: Delivery) -> Result<(), End> {
        let span = match &delivery.envelope.subtask_id {
            Some(id) => self.attempts.span(id),
            None => tracing::Span::none(),
        };
        let verdict = self.apply_reply(&delivery).instrument(span).await?;
        if delivery.envelope.kind == MessageKind::TaskResult {
            crash_point!("driver::result_stored");
        }
        let acked = match verdict {
            Verdict::Applied => delivery.ack().await,
            Verdict::Unusable(reason) => {
                tracing::warn!(message_id = %delivery.envelope.id, %reason, "unusable reply set aside");
                delivery.dead_letter(&reason).await
            }
        };
        if let Err(e) = acked {
            tracing::warn!(error = %e, "could not acknowledge a reply");
        }
        Ok(())
    }

    async fn apply_reply(&mut self, delivery: &Delivery) -> Result<Verdict, End> {
        let env = &delivery.envelope;
        let (task_id, id, attempt) = match env.subtask_ref() {
            Ok(r) => r,
            Err(e) => return Ok(Verdict::Unusable(e.to_string())),
        };
        if task_id != self.ledger.id() {
            return Ok(Verdict::Unusable(format!(
                "reply for task {task_id} reached task {}",
                self.ledger.id()
            )));
        }
        let Some(current) = self.ledger.subtask(id) else {
            return Ok(Verdict::Unusable(format!("the task has no subtask {id}")));
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
                    let step = Step::attempt(
                        By::Agent(&from),
                        &id,
                        attempt,
                        EventKind::SubtaskStarted,
                        detail,
                    );
                    self.apply_recorded(&id, &change, step).await?;
                }
                Ok(Progress::Note { message }) => {
                    if in_flight {
                        let step = Step::attempt(
                            By::Agent(&from),
                            &id,
                            attempt,
                            EventKind::SubtaskProgress,
                            message,
                        );
                        self.journal.record(step).await?;
                    }
                }
                Err(e) => return Ok(Verdict::Unusable(e.to_string())),
            },
            MessageKind::TaskResult => match env.decode::<TaskResult>() {
                Ok(result) => self.on_result(&id, attempt, &from, result).await?,
                Err(e) => return Ok(Verdict::Unusable(e.to_string())),
            },
            MessageKind::TaskError => match env.decode::<TaskError>() {
                Ok(e) => {
                    let failure = Failure {
                        id: &id,
                        attempt,
                        error: e.message,
                        retryable: e.retryable,
                        reported: Some((&from, e.usage)),
                    };
                    self.on_attempt_failed(failure).await?;
                }
                Err(e) => return Ok(Verdict::Unusable(e.to_string())),
            },
            other => {
                return Ok(Verdict::Unusable(format!(
                    "unexpected {other} message on the orchestrator's inbox"
                )));
            }
        }
        Ok(Verdict::Applied)
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
        let step = Step::attempt(
            By::Agent(from),
            id,
            attempt,
            EventKind::SubtaskCompleted,
            detail,
        )
        .costing(result.usage);
        if !self.apply_recorded(id, &change, step).await? {
            tracing::debug!(subtask_id = %id, attempt, "duplicate or stale result ignored");
            return Ok(());
        }
        self.ledger.add_usage(result.usage);
        self.attempts.settle(id, Outcome::Completed);
        self.stalls = 0;
        Ok(())
    }

    pub(super) async fn on_attempt_failed(&mut self, failure: Failure<'_>) -> Result<(), End> {
        let Failure {
            id,
            attempt,
            error,
            retryable,
            reported,
        } = failure;
        let (by, usage) = match reported {
            Some((agent, usage)) => (By::Agent(agent), usage),
            None => (By::Orchestrator, Usage::default()),
        };
        let config = &self.shared.config.orchestrator;
        let retry = retryable && attempt < config.max_attempts;
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
        let change = SubtaskChange::AttemptFailed {
            attempt,
            error: error.clone(),
            retry,
        };
        let step = Step::attempt(by, id, attempt, event, detail).costing(usage);
        if !self.apply_recorded(id, &change, step).await? {
            tracing::debug!(subtask_id = %id, attempt, "duplicate or stale failure ignored");
            return Ok(());
        }
        self.ledger.add_usage(usage);
        self.stalls += 1;
        match wait {
            Some(wait) => {
                self.attempts
                    .settle(id, Outcome::Retry { unwell: retryable });
                self.attempts.retry_at(id.clone(), Instant::now() + wait);
            }
            None => {
                self.attempts
                    .settle(id, Outcome::Failed { unwell: retryable });
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
        self.journal
            .record(Step::task(EventKind::Stalled, reason.clone()))
            .await?;
        self.replan_or_fail(reason).await
    }

    pub(super) async fn on_timer(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if now >= self.task_deadline {
            return Err(self.timed_out());
        }
        let timeout = fmt(self.shared.config.orchestrator.subtask_timeout());
        for id in self.attempts.expire(now) {
            let attempt = self.ledger.subtask(&id).map_or(0, |s| s.attempts);
            let span = self.attempts.span(&id);
            let failure = Failure {
                id: &id,
                attempt,
                error: format!("no result within {timeout}"),
                retryable: true,
                reported: None,
            };
            self.on_attempt_failed(failure).instrument(span).await?;
        }
        // Retries that are due are dispatched by the next `dispatch_ready`.
        Ok(())
    }
}
