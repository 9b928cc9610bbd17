//! [`Attempts`]: what the driver knows of each subtask's attempt beyond the
//! ledger, kept in one table so that no transition can update one part and
//! forget another: the attempt in flight (its deadline, its trace span, the
//! role breaker it passed) and, for a subtask waiting to be tried again, when.
//!
//! The ledger says *whether* a subtask is in flight; this table says *until
//! when* and *how to report its end*. The driver keeps them in step: it
//! [`dispatch`](Attempts::dispatch)es when the ledger says dispatched, and
//! [`settle`](Attempts::settle)s when the ledger takes a result or a failure.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;
use troupe_core::SubtaskId;

use crate::resilience::Circuit;

/// The role breaker an attempt passed, and whether as its one trial.
pub(super) struct Gate {
    pub(super) circuit: Arc<Circuit>,
    pub(super) trial: bool,
}

impl Gate {
    /// The attempt will not report to the breaker (it was superseded): a
    /// trial slot it held is freed.
    fn abandon(self) {
        if self.trial {
            self.circuit.abandon_trial();
        }
    }
}

/// An attempt in flight.
struct InFlight {
    /// When it times out.
    deadline: Instant,
    /// Its `subtask.dispatch` span, ended with the attempt's outcome.
    span: tracing::Span,
    /// The role breaker it passed, told how it went.
    gate: Option<Gate>,
}

/// How an attempt ended, for its span and its role's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A worker returned a result.
    Completed,
    /// It failed and will be tried again.
    Retry {
        /// Whether the role's workers look unwell (a timeout, a retryable error).
        unwell: bool,
    },
    /// It failed for good.
    Failed {
        /// Whether the role's workers look unwell.
        unwell: bool,
    },
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
        }
    }

    fn unwell(self) -> bool {
        match self {
            Outcome::Completed => false,
            Outcome::Retry { unwell } | Outcome::Failed { unwell } => unwell,
        }
    }
}

/// The attempts of one task's subtasks.
#[derive(Default)]
pub(super) struct Attempts {
    in_flight: HashMap<SubtaskId, InFlight>,
    retry_at: HashMap<SubtaskId, Instant>,
}

impl Attempts {
    /// An attempt of `id` was sent, due by `deadline`. A gate an earlier
    /// attempt still held is abandoned.
    pub(super) fn dispatch(
        &mut self,
        id: SubtaskId,
        deadline: Instant,
        span: tracing::Span,
        gate: Option<Gate>,
    ) {
        self.retry_at.remove(&id);
        let old = self.in_flight.insert(
            id,
            InFlight {
                deadline,
                span,
                gate,
            },
        );
        if let Some(old) = old {
            close(old, "superseded");
        }
    }

    /// The span of `id`'s attempt in flight, or a disabled one.
    pub(super) fn span(&self, id: &SubtaskId) -> tracing::Span {
        self.in_flight
            .get(id)
            .map_or_else(tracing::Span::none, |a| a.span.clone())
    }

    /// `id`'s attempt ended: its span records the outcome and its role's
    /// breaker hears how it went.
    pub(super) fn settle(&mut self, id: &SubtaskId, outcome: Outcome) {
        let Some(attempt) = self.in_flight.remove(id) else {
            return;
        };
        attempt.span.record("outcome", outcome.name());
        if outcome != Outcome::Completed {
            attempt.span.record("otel.status_code", "ERROR");
        }
        if let Some(gate) = attempt.gate {
            gate.circuit.record(outcome.unwell(), gate.trial);
        }
    }

    /// `id` may be tried again at `at`, not before.
    pub(super) fn retry_at(&mut self, id: SubtaskId, at: Instant) {
        self.retry_at.insert(id, at);
    }

    /// `id` no longer waits to be tried again (it is being tried now).
    pub(super) fn clear_retry(&mut self, id: &SubtaskId) {
        self.retry_at.remove(id);
    }

    /// Whether `id` must still wait before it is tried again.
    pub(super) fn waiting(&self, id: &SubtaskId, now: Instant) -> bool {
        self.retry_at.get(id).is_some_and(|at| *at > now)
    }

    /// Whether any subtask waits to be tried again.
    pub(super) fn any_waiting(&self) -> bool {
        !self.retry_at.is_empty()
    }

    /// The attempts whose deadline has passed at `now`. Each is reported
    /// once: it stays in the table, with no deadline, until its failure
    /// [`settle`](Self::settle)s it.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<SubtaskId> {
        let mut due = Vec::new();
        for (id, attempt) in &mut self.in_flight {
            if attempt.deadline <= now {
                attempt.deadline = now + NEVER;
                due.push(id.clone());
            }
        }
        due
    }

    /// Every attempt in flight is superseded (a new plan, or the task's end):
    /// spans end as superseded, breaker trials are freed, and no retry waits.
    pub(super) fn supersede_all(&mut self) {
        for (_, attempt) in self.in_flight.drain() {
            close(attempt, "superseded");
        }
        self.retry_at.clear();
    }

    /// Keeps only the attempts the ledger still has in flight and the
    /// retries of subtasks it still has pending (after it was reloaded).
    pub(super) fn retain(
        &mut self,
        in_flight: impl Fn(&SubtaskId) -> bool,
        pending: impl Fn(&SubtaskId) -> bool,
    ) {
        let gone: Vec<SubtaskId> = self
            .in_flight
            .keys()
            .filter(|id| !in_flight(id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(attempt) = self.in_flight.remove(&id) {
                close(attempt, "superseded");
            }
        }
        self.retry_at.retain(|id, _| pending(id));
    }

    /// The next time something is due: a deadline or a retry.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        self.in_flight
            .values()
            .map(|a| a.deadline)
            .chain(self.retry_at.values().copied())
            .min()
    }
}

/// How far off the deadline of an attempt already reported as expired is:
/// never, in practice.
const NEVER: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// Ends an attempt that will not report: its span says why, its trial is freed.
fn close(attempt: InFlight, outcome: &'static str) {
    attempt.span.record("outcome", outcome);
    if let Some(gate) = attempt.gate {
        gate.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sid(s: &str) -> SubtaskId {
        SubtaskId::new(s).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_and_retries_wake_the_driver_in_order() {
        let mut table = Attempts::default();
        let now = Instant::now();
        assert_eq!(table.next_wake(), None);
        table.dispatch(
            sid("a"),
            now + Duration::from_secs(5),
            tracing::Span::none(),
            None,
        );
        table.retry_at(sid("b"), now + Duration::from_secs(2));
        assert_eq!(table.next_wake(), Some(now + Duration::from_secs(2)));
        assert!(table.waiting(&sid("b"), now));
        assert!(!table.waiting(&sid("b"), now + Duration::from_secs(2)));
        assert!(table.expire(now + Duration::from_secs(4)).is_empty());
        let expired = table.expire(now + Duration::from_secs(5));
        assert_eq!(expired, vec![sid("a")]);
        // Expired once: not again while its failure is written.
        assert!(table.expire(now + Duration::from_secs(6)).is_empty());
        table.settle(&sid("a"), Outcome::Retry { unwell: true });
        // Dispatching a waiting subtask ends its wait.
        table.dispatch(
            sid("b"),
            now + Duration::from_secs(9),
            tracing::Span::none(),
            None,
        );
        assert!(!table.any_waiting());
        table.supersede_all();
        assert_eq!(table.next_wake(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retain_keeps_what_the_reloaded_ledger_still_has() {
        let mut table = Attempts::default();
        let later = Instant::now() + Duration::from_secs(1);
        table.dispatch(sid("a"), later, tracing::Span::none(), None);
        table.dispatch(sid("b"), later, tracing::Span::none(), None);
        table.retry_at(sid("c"), later);
        table.retry_at(sid("d"), later);
        table.retain(|id| id.as_str() == "a", |id| id.as_str() == "c");
        assert_eq!(table.expire(later), vec![sid("a")]);
        assert!(table.waiting(&sid("c"), Instant::now()));
        assert!(!table.waiting(&sid("d"), Instant::now()));
    }
}
