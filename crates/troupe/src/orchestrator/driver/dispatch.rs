//! Dispatch: publishing every ready subtask to its role, after its state is stored.

use tokio::time::Instant;
use tracing::Instrument as _;
use troupe_core::bus::topics;
use troupe_core::envelope::{DependencyResult, Envelope, MessageKind, TaskAssign, role_address};
use troupe_core::ledger::{Applied, EventKind, SubtaskChange};
use troupe_core::task::SubtaskStatus;
use troupe_core::{Role, SubtaskId};

use super::attempts::Gate;
use super::journal::{By, Step};
use super::replies::Failure;
use super::{Driver, End};
use crate::telemetry::propagation;

/// One attempt being sent.
struct Send {
    id: SubtaskId,
    attempt: u32,
    role: Role,
    envelope: Envelope,
    change: SubtaskChange,
    span: tracing::Span,
}

impl Driver {
    pub(super) async fn dispatch_ready(&mut self) -> Result<(), End> {
        let now = Instant::now();
        let ready: Vec<SubtaskId> = self
            .ledger
            .ready()
            .into_iter()
            .filter(|s| !self.attempts.waiting(s, now))
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let timeout = self.shared.config.orchestrator.subtask_timeout();
        let mut sends = Vec::with_capacity(ready.len());
        for id in ready {
            // While the role's breaker is open its subtasks wait, undispatched.
            let circuit = self
                .ledger
                .subtask(&id)
                .and_then(|s| self.shared.role_circuit(&s.role))
                .cloned();
            let gate = match circuit {
                Some(circuit) => match circuit.admit() {
                    Ok(trial) => Some(Gate { circuit, trial }),
                    Err(wait) => {
                        tracing::debug!(subtask_id = %id, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                            "the role's circuit is open; the subtask waits");
                        self.attempts.retry_at(id, now + wait);
                        continue;
                    }
                },
                None => None,
            };
            self.attempts.clear_retry(&id);
            let attempt = self.ledger.subtask(&id).map_or(1, |s| s.attempts + 1);
            let change = SubtaskChange::Dispatched { attempt };
            if !matches!(self.ledger.apply(&id, &change), Ok(Applied::Changed)) {
                if let Some(Gate {
                    circuit,
                    trial: true,
                }) = gate
                {
                    circuit.abandon_trial();
                }
                continue;
            }
            let (role, mut envelope) = self.assignment(&id, attempt)?;
            // The attempt's span: the worker's span is its child, through the envelope.
            let span = tracing::info_span!(
                "subtask.dispatch",
                otel.name = %format_args!("dispatch {id}"),
                otel.kind = "producer",
                otel.status_code = tracing::field::Empty,
                subtask_id = %id,
                attempt = i64::from(attempt),
                role = %role,
                outcome = tracing::field::Empty,
            );
            propagation::inject(&span, &mut envelope.trace_context);
            envelope.request_id = Some(self.request_id.clone());
            self.attempts
                .dispatch(id.clone(), now + timeout, span.clone(), gate);
            sends.push(Send {
                id,
                attempt,
                role,
                envelope,
                change,
                span,
            });
        }
        // One group commit for every dispatch and its ledger entry.
        let steps: Vec<_> = sends
            .iter()
            .map(|s| {
                let step = Step::attempt(
                    By::Orchestrator,
                    &s.id,
                    s.attempt,
                    EventKind::SubtaskDispatched,
                    format!("sent to the {} workers", s.role),
                );
                (&s.id, &s.change, step, s.span.clone())
            })
            .collect();
        if self.journal.write_steps(steps).await? {
            self.resync().await?;
        }
        for send in sends {
            self.publish(send).await?;
        }
        crash_point!("driver::dispatched");
        Ok(())
    }

    /// Publishes an attempt whose dispatch is stored; a failed publish is a
    /// failed attempt.
    async fn publish(&mut self, send: Send) -> Result<(), End> {
        let Send {
            id,
            attempt,
            role,
            envelope,
            span,
            ..
        } = send;
        // A failed publish may have led to a re-plan that superseded the rest.
        let still_due = self
            .ledger
            .subtask(&id)
            .is_some_and(|s| s.status == SubtaskStatus::Dispatched && s.attempts == attempt);
        if !still_due {
            return Ok(());
        }
        let published = self
            .shared
            .bus
            .publish(&topics::role(&role), envelope)
            .instrument(span.clone())
            .await;
        if let Err(e) = published {
            let failure = Failure {
                id: &id,
                attempt,
                error: format!("could not publish the subtask: {e}"),
                retryable: true,
                reported: None,
            };
            self.on_attempt_failed(failure).instrument(span).await?;
        }
        Ok(())
    }

    fn assignment(&self, id: &SubtaskId, attempt: u32) -> Result<(Role, Envelope), End> {
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
        let timeout = self.shared.config.orchestrator.subtask_timeout();
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
}
