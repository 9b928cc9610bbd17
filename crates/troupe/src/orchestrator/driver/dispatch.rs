//! Dispatch: publishing every ready subtask to its role, after its state is stored.

use super::{Driver, End, write_step};
use crate::telemetry::propagation;
use futures::future::join_all;
use tokio::time::Instant;
use tracing::Instrument as _;
use troupe_core::bus::topics;
use troupe_core::envelope::{DependencyResult, Envelope, MessageKind, TaskAssign, role_address};
use troupe_core::ledger::{Applied, EventKind, NewProgressEntry, SubtaskChange};
use troupe_core::store::StoreError;
use troupe_core::task::SubtaskStatus;
use troupe_core::{Role, SubtaskId};

impl Driver {
    pub(super) async fn dispatch_ready(&mut self) -> Result<(), End> {
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
        let timeout = self.shared.config.orchestrator.subtask_timeout();
        let mut sends = Vec::with_capacity(ready.len());
        for id in ready {
            // While the role's breaker is open its subtasks wait, undispatched.
            let gate = self
                .ledger
                .subtask(&id)
                .and_then(|s| self.shared.role_circuit(&s.role))
                .cloned();
            let trial = match gate.as_ref().map(|c| c.admit()) {
                Some(Err(wait)) => {
                    tracing::debug!(subtask_id = %id, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "the role's circuit is open; the subtask waits");
                    self.retry_at.insert(id, now + wait);
                    continue;
                }
                Some(Ok(trial)) => trial,
                None => false,
            };
            self.retry_at.remove(&id);
            let attempt = self.ledger.subtask(&id).map_or(1, |s| s.attempts + 1);
            let change = SubtaskChange::Dispatched { attempt };
            if !matches!(self.ledger.apply(&id, &change), Ok(Applied::Changed)) {
                if let Some(circuit) = gate
                    && trial
                {
                    circuit.abandon_trial();
                }
                continue;
            }
            if let Some(circuit) = gate
                && let Some((old, true)) = self.attempt_gates.insert(id.clone(), (circuit, trial))
            {
                old.abandon_trial();
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
            self.deadlines.insert(id.clone(), now + timeout);
            sends.push((id, attempt, role, envelope, change, span));
        }
        // One group commit for every dispatch and its ledger entry.
        let shared = &self.shared;
        let task_id = self.ledger.id();
        let fence = self.fence();
        let writes = sends.iter().map(|(id, attempt, role, _, change, span)| {
            async move {
                let entry = NewProgressEntry::subtask(
                    task_id,
                    &shared.agent,
                    id,
                    *attempt,
                    EventKind::SubtaskDispatched,
                    format!("sent to the {role} workers"),
                )
                .with_fence(fence);
                let (applied, _) = write_step(shared, id, change, entry).await?;
                Ok::<_, StoreError>(applied)
            }
            .instrument(span.clone())
        });
        let mut diverged = false;
        for written in join_all(writes).await {
            diverged |= written? == Applied::Unchanged;
        }
        if diverged {
            self.resync().await?;
        }
        for (id, attempt, role, envelope, _, span) in sends {
            // A failed publish may have led to a re-plan that superseded the rest.
            let still_due = self
                .ledger
                .subtask(&id)
                .is_some_and(|s| s.status == SubtaskStatus::Dispatched && s.attempts == attempt);
            if !still_due {
                continue;
            }
            let published = self
                .shared
                .bus
                .publish(&topics::role(&role), envelope)
                .instrument(span.clone())
                .await;
            match published {
                // The span lives until the attempt's outcome arrives.
                Ok(()) => {
                    self.attempt_spans.insert(id, span);
                }
                Err(e) => {
                    self.on_attempt_failed(
                        &id,
                        attempt,
                        format!("could not publish the subtask: {e}"),
                        true,
                        None,
                    )
                    .instrument(span)
                    .await?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn assignment(&self, id: &SubtaskId, attempt: u32) -> Result<(Role, Envelope), End> {
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
