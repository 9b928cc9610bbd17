//! The runtime's lifecycle events, one struct each: emitting one writes its
//! log line (if it has one) and updates its metrics in one place, so that a
//! log and a counter can never tell two stories, and every metric has
//! exactly one place that moves it. (The shape is vector's internal events.)
//!
//! Log levels: failures a person should look at are `warn`, steps of a
//! task and changes of state are `info`, per-message detail is `debug`.
//! Metric labels are bounded sets (statuses, kinds, classes, roles, topic
//! classes), never ids or error text.

use std::time::Duration;

use troupe_core::ledger::{EventKind, ProgressEntry};
use troupe_core::task::{TaskStatus, Usage};

use super::metrics::{
    ACTIVE_WORKERS, LLM_CALL_DURATION_SECONDS, LLM_ERRORS_TOTAL, LLM_TOKENS_TOTAL,
    MESSAGE_LATENCY_SECONDS, MESSAGES_TOTAL, PENDING_TASKS, QUEUE_DEPTH, TASK_DURATION_SECONDS,
    TASKS_TOTAL, WORKERS_TOTAL,
};
use crate::resilience::CircuitState;

/// Something that happened in the runtime, told to the logs and the metrics.
pub(crate) trait InternalEvent {
    /// Logs it and counts it.
    fn emit(self);
}

/// Emits `event`.
pub(crate) fn emit(event: impl InternalEvent) {
    event.emit();
}

/// A step was stored in a task's progress ledger. The task and the
/// subtask's attempt come from the enclosing spans; the agent differs from
/// step to step, so it is a field.
pub(crate) struct StepStored<'a>(pub(crate) &'a ProgressEntry);

impl InternalEvent for StepStored<'_> {
    fn emit(self) {
        let e = self.0;
        let event = e.event.as_str();
        let tokens = e.usage.map_or(0, |u| u.total());
        match e.event {
            EventKind::TaskFailed | EventKind::SubtaskFailed | EventKind::Stalled => {
                tracing::warn!(
                    step = e.step, event, agent_id = %e.agent, detail = %e.detail, "{event}"
                );
            }
            _ => tracing::info!(
                step = e.step, event, agent_id = %e.agent, detail = %e.detail, tokens, "{event}"
            ),
        }
    }
}

/// A task reached a status (its step in the progress ledger logs it).
pub(crate) struct TaskStatusReached(pub(crate) TaskStatus);

impl InternalEvent for TaskStatusReached {
    fn emit(self) {
        ::metrics::counter!(TASKS_TOTAL, "status" => self.0.as_str()).increment(1);
    }
}

/// A task ended, after `elapsed` in this process.
pub(crate) struct TaskEnded {
    pub(crate) status: TaskStatus,
    pub(crate) elapsed: Duration,
}

impl InternalEvent for TaskEnded {
    fn emit(self) {
        ::metrics::histogram!(TASK_DURATION_SECONDS, "status" => self.status.as_str())
            .record(self.elapsed.as_secs_f64());
    }
}

/// This process started (`true`) or stopped (`false`) driving a task.
pub(crate) struct TaskDriven(pub(crate) bool);

impl InternalEvent for TaskDriven {
    fn emit(self) {
        let by = if self.0 { 1.0 } else { -1.0 };
        ::metrics::gauge!(PENDING_TASKS).increment(by);
    }
}

/// A worker agent of `role` started.
pub(crate) struct WorkerStarted<'a> {
    pub(crate) role: &'a str,
    pub(crate) agent: &'a str,
}

impl InternalEvent for WorkerStarted<'_> {
    fn emit(self) {
        tracing::debug!(role = self.role, agent_id = self.agent, "worker started");
        ::metrics::counter!(WORKERS_TOTAL, "status" => "started").increment(1);
        ::metrics::gauge!(ACTIVE_WORKERS, "role" => self.role.to_owned()).increment(1.0);
    }
}

/// A worker agent of `role` stopped.
pub(crate) struct WorkerStopped<'a> {
    pub(crate) role: &'a str,
    pub(crate) agent: &'a str,
}

impl InternalEvent for WorkerStopped<'_> {
    fn emit(self) {
        tracing::debug!(role = self.role, agent_id = self.agent, "worker stopped");
        ::metrics::counter!(WORKERS_TOTAL, "status" => "stopped").increment(1);
        ::metrics::gauge!(ACTIVE_WORKERS, "role" => self.role.to_owned()).decrement(1.0);
    }
}

/// A message was published (or not, with the error).
pub(crate) struct MessageSent<'a> {
    pub(crate) topic: &'a str,
    pub(crate) message_id: &'a dyn std::fmt::Display,
    pub(crate) kind: &'static str,
    pub(crate) error: Option<&'a dyn std::fmt::Display>,
}

impl InternalEvent for MessageSent<'_> {
    fn emit(self) {
        let Self {
            topic,
            message_id,
            kind,
            error,
        } = self;
        match error {
            None => {
                tracing::debug!(topic, %message_id, message_type = kind, "bus send");
                ::metrics::counter!(MESSAGES_TOTAL, "type" => kind).increment(1);
            }
            Some(error) => {
                tracing::debug!(topic, %message_id, message_type = kind, %error, "bus send failed");
            }
        }
    }
}

/// A message was delivered, `latency` after it was created.
pub(crate) struct MessageReceived<'a> {
    pub(crate) topic: &'a str,
    pub(crate) message_id: &'a dyn std::fmt::Display,
    pub(crate) kind: &'static str,
    pub(crate) from: &'a dyn std::fmt::Display,
    pub(crate) delivery_count: u32,
    pub(crate) latency: Duration,
}

impl InternalEvent for MessageReceived<'_> {
    fn emit(self) {
        tracing::debug!(
            topic = self.topic,
            message_id = %self.message_id,
            message_type = self.kind,
            from = %self.from,
            delivery_count = self.delivery_count,
            latency_us = u64::try_from(self.latency.as_micros()).unwrap_or(u64::MAX),
            "bus receive"
        );
        ::metrics::histogram!(MESSAGE_LATENCY_SECONDS, "type" => self.kind)
            .record(self.latency.as_secs_f64());
    }
}

/// An LLM call of `kind` answered, after `elapsed`, spending `usage`.
pub(crate) struct LlmCallAnswered {
    pub(crate) kind: &'static str,
    pub(crate) elapsed: Duration,
    pub(crate) usage: Usage,
}

impl InternalEvent for LlmCallAnswered {
    fn emit(self) {
        let kind = self.kind;
        ::metrics::histogram!(LLM_CALL_DURATION_SECONDS, "kind" => kind, "outcome" => "ok")
            .record(self.elapsed.as_secs_f64());
        ::metrics::counter!(LLM_TOKENS_TOTAL, "kind" => kind, "direction" => "input")
            .increment(self.usage.prompt_tokens);
        ::metrics::counter!(LLM_TOKENS_TOTAL, "kind" => kind, "direction" => "output")
            .increment(self.usage.completion_tokens);
    }
}

/// An LLM call of `kind` failed with an error of `class`, after `elapsed`.
pub(crate) struct LlmCallFailed {
    pub(crate) kind: &'static str,
    pub(crate) class: &'static str,
    pub(crate) elapsed: Duration,
}

impl InternalEvent for LlmCallFailed {
    fn emit(self) {
        tracing::debug!(kind = self.kind, class = self.class, "LLM call failed");
        ::metrics::histogram!(LLM_CALL_DURATION_SECONDS, "kind" => self.kind, "outcome" => self.class)
            .record(self.elapsed.as_secs_f64());
        ::metrics::counter!(LLM_ERRORS_TOTAL, "class" => self.class).increment(1);
    }
}

/// A circuit breaker was made (`before` is `None`: no log line) or changed state.
pub(crate) struct CircuitChanged<'a> {
    /// Its gauge (`multiagent_llm_circuit_state`, `multiagent_role_circuit_state`).
    pub(crate) metric: &'static str,
    /// What kind of thing it guards, the gauge's label (`provider`, `role`).
    pub(crate) label: &'static str,
    /// What it guards.
    pub(crate) name: &'a str,
    pub(crate) before: Option<CircuitState>,
    pub(crate) state: CircuitState,
    /// For a circuit that opened: its threshold and reset time.
    pub(crate) threshold: u32,
    pub(crate) reset_after: Duration,
}

impl InternalEvent for CircuitChanged<'_> {
    fn emit(self) {
        let (circuit, name) = (self.label, self.name);
        match (self.before, self.state) {
            (None, _) => {}
            (Some(_), CircuitState::Open) => tracing::warn!(
                circuit,
                name,
                threshold = self.threshold,
                reset_after_ms = u64::try_from(self.reset_after.as_millis()).unwrap_or(u64::MAX),
                "circuit opened: refusing until the reset time"
            ),
            (Some(_), CircuitState::HalfOpen) => {
                tracing::info!(circuit, name, "circuit half-open: one trial");
            }
            (Some(_), CircuitState::Closed) => tracing::info!(circuit, name, "circuit closed"),
        }
        ::metrics::gauge!(self.metric, self.label => name.to_owned()).set(self.state.gauge());
    }
}

/// The depth of a topic was read.
pub(crate) struct QueueDepthRead<'a> {
    /// The topic's class (`role.NAME` or `inbox`).
    pub(crate) topic: &'a str,
    pub(crate) depth: u64,
}

impl InternalEvent for QueueDepthRead<'_> {
    fn emit(self) {
        // Gauges are f64; a depth beyond 2^53 is not a concern.
        #[allow(clippy::cast_precision_loss)]
        let depth = self.depth as f64;
        ::metrics::gauge!(QUEUE_DEPTH, "topic" => self.topic.to_owned()).set(depth);
    }
}
