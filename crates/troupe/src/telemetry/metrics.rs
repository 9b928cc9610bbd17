//! The metric names, their labels and help texts.
//!
//! Labels are bounded: statuses, message kinds, call kinds, error classes,
//! role names and topic classes, never ids or error strings. Call
//! [`describe`] once after installing a recorder so that every metric gets
//! its help text and unit.

use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Counter: tasks that reached a status, by `status`.
pub const TASKS_TOTAL: &str = "multiagent_tasks_total";
/// Histogram: time from submission to the end of a task, by final `status`.
pub const TASK_DURATION_SECONDS: &str = "multiagent_task_duration_seconds";
/// Gauge: tasks accepted by this process and not ended yet.
pub const PENDING_TASKS: &str = "multiagent_pending_tasks";
/// Counter: messages published on the bus, by `type` (the envelope's kind).
pub const MESSAGES_TOTAL: &str = "multiagent_messages_total";
/// Histogram: time from a message's creation to its delivery, by `type`.
pub const MESSAGE_LATENCY_SECONDS: &str = "multiagent_message_latency_seconds";
/// Counter: worker agents that started or stopped, by `status`.
pub const WORKERS_TOTAL: &str = "multiagent_workers_total";
/// Gauge: worker agents running in this process, by `role`.
pub const ACTIVE_WORKERS: &str = "multiagent_active_workers";
/// Gauge: messages waiting on a topic, by `topic` (`role.NAME` or `inbox`).
pub const QUEUE_DEPTH: &str = "multiagent_queue_depth";
/// Histogram: one LLM request, by `kind` (plan, work, ...) and `outcome`
/// (`ok` or the error class).
pub const LLM_CALL_DURATION_SECONDS: &str = "multiagent_llm_call_duration_seconds";
/// Counter: tokens, by `kind` of call and `direction` (`input` or `output`).
pub const LLM_TOKENS_TOTAL: &str = "multiagent_llm_tokens_total";
/// Counter: failed LLM requests, by `class` (rate_limited, server, timeout, ...).
pub const LLM_ERRORS_TOTAL: &str = "multiagent_llm_errors_total";
/// Gauge: each provider's circuit breaker, by `provider`: 0 closed, 1 half-open, 2 open.
pub const LLM_CIRCUIT_STATE: &str = "multiagent_llm_circuit_state";
/// Gauge: each worker role's circuit breaker, by `role`: 0 closed, 1 half-open, 2 open.
pub const ROLE_CIRCUIT_STATE: &str = "multiagent_role_circuit_state";

/// Every metric name above.
pub const ALL: [&str; 13] = [
    TASKS_TOTAL,
    TASK_DURATION_SECONDS,
    PENDING_TASKS,
    MESSAGES_TOTAL,
    MESSAGE_LATENCY_SECONDS,
    WORKERS_TOTAL,
    ACTIVE_WORKERS,
    QUEUE_DEPTH,
    LLM_CALL_DURATION_SECONDS,
    LLM_TOKENS_TOTAL,
    LLM_ERRORS_TOTAL,
    LLM_CIRCUIT_STATE,
    ROLE_CIRCUIT_STATE,
];

/// Every histogram's bucket bounds, in seconds: from a fast message to a
/// local model's long answer.
pub const BUCKETS_SECONDS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

/// Gives every metric its help text and unit (call after installing a recorder).
pub fn describe() {
    describe_counter!(TASKS_TOTAL, "Tasks that reached a status, by status.");
    describe_histogram!(
        TASK_DURATION_SECONDS,
        Unit::Seconds,
        "Time from the submission of a task to its end, by final status."
    );
    describe_gauge!(
        PENDING_TASKS,
        "Tasks accepted by this process and not ended yet."
    );
    describe_counter!(
        MESSAGES_TOTAL,
        "Messages published on the bus, by message type."
    );
    describe_histogram!(
        MESSAGE_LATENCY_SECONDS,
        Unit::Seconds,
        "Time from the creation of a message to its delivery, by message type."
    );
    describe_counter!(
        WORKERS_TOTAL,
        "Worker agents that started or stopped, by status."
    );
    describe_gauge!(
        ACTIVE_WORKERS,
        "Worker agents running in this process, by role."
    );
    describe_gauge!(QUEUE_DEPTH, "Messages waiting to be delivered, by topic.");
    describe_histogram!(
        LLM_CALL_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one LLM request, by call kind and outcome."
    );
    describe_counter!(
        LLM_TOKENS_TOTAL,
        "LLM tokens, by call kind and direction (input or output)."
    );
    describe_counter!(LLM_ERRORS_TOTAL, "Failed LLM requests, by error class.");
    describe_gauge!(
        LLM_CIRCUIT_STATE,
        "Circuit breaker of each LLM provider: 0 closed, 1 half-open, 2 open."
    );
    describe_gauge!(
        ROLE_CIRCUIT_STATE,
        "Circuit breaker of each worker role: 0 closed, 1 half-open, 2 open."
    );
}

/// The bounded label for a topic: role topics keep their name, every
/// agent's inbox is `inbox`, anything else `other`.
pub fn topic_label(topic: &str) -> String {
    if topic.starts_with("role.") {
        topic.to_owned()
    } else if topic.starts_with("inbox.") {
        "inbox".to_owned()
    } else {
        "other".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_labels_never_carry_ids() {
        assert_eq!(topic_label("role.coder"), "role.coder");
        assert_eq!(topic_label("inbox.orchestrator-0192f0"), "inbox");
        assert_eq!(topic_label("jobs"), "other");
    }

    #[test]
    fn buckets_ascend() {
        assert!(BUCKETS_SECONDS.windows(2).all(|w| w[0] < w[1]));
    }
}
