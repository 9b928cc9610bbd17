//! The message envelope every bus carries, and the payloads inside it.
//!
//! The envelope's field names are a fixed interface (add, don't rename): `id`,
//! `kind`, `from`, `to`, `task_id`, `subtask_id`, `attempt`, `payload`,
//! `created_at`, `trace_context`. The payload is JSON so that a bus can carry
//! it between processes; [`Envelope::decode`] reads it into one of the typed
//! payloads below, and a payload that does not fit is an error, never a panic.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AgentId, MessageId, SubtaskId, TaskId};
use crate::role::Role;
use crate::task::Usage;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// The orchestrator hands a subtask to a role ([`TaskAssign`]).
    TaskAssign,
    /// A worker's output ([`TaskResult`]).
    TaskResult,
    /// A worker could not do the subtask ([`TaskError`]).
    TaskError,
    /// A worker reports how it is doing ([`Progress`]).
    Progress,
    /// An agent says it is alive.
    Heartbeat,
    /// An instruction to an agent (cancel, shut down).
    Control,
}

impl MessageKind {
    /// The kind's name, as on the wire and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::TaskAssign => "task_assign",
            MessageKind::TaskResult => "task_result",
            MessageKind::TaskError => "task_error",
            MessageKind::Progress => "progress",
            MessageKind::Heartbeat => "heartbeat",
            MessageKind::Control => "control",
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per message (a redelivery keeps it).
    pub id: MessageId,
    /// What the message is.
    pub kind: MessageKind,
    /// The sending agent.
    pub from: AgentId,
    /// The address: an agent id, or `role:NAME` for whichever worker of a role takes it.
    pub to: String,
    /// The task it concerns.
    pub task_id: Option<TaskId>,
    /// The subtask it concerns.
    pub subtask_id: Option<SubtaskId>,
    /// The attempt it concerns; results of other attempts are ignored.
    pub attempt: Option<u32>,
    /// The typed payload, as JSON.
    pub payload: Value,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// W3C trace context (`traceparent`, `tracestate`) of the sender's span.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trace_context: BTreeMap<String, String>,
    /// The request that started the task (for logs), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A payload that does not fit its envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind} message {id}: {reason}")]
pub struct PayloadError {
    /// The message.
    pub id: MessageId,
    /// Its kind.
    pub kind: MessageKind,
    /// What is wrong.
    pub reason: String,
}

impl Envelope {
    /// A new envelope from `from` to `to` carrying `payload`.
    pub fn new<P: Serialize>(
        kind: MessageKind,
        from: AgentId,
        to: impl Into<String>,
        payload: &P,
    ) -> Result<Self, PayloadError> {
        let id = MessageId::new();
        let payload = serde_json::to_value(payload).map_err(|e| PayloadError {
            id,
            kind,
            reason: e.to_string(),
        })?;
        Ok(Self {
            id,
            kind,
            from,
            to: to.into(),
            task_id: None,
            subtask_id: None,
            attempt: None,
            payload,
            created_at: Utc::now(),
            trace_context: BTreeMap::new(),
            request_id: None,
        })
    }

    /// Sets the request the message's task came from.
    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    /// Sets the task, subtask and attempt the message concerns.
    pub fn about(mut self, task_id: TaskId, subtask_id: &SubtaskId, attempt: u32) -> Self {
        self.task_id = Some(task_id);
        self.subtask_id = Some(subtask_id.clone());
        self.attempt = Some(attempt);
        self
    }

    /// Reads the payload as `P`.
    pub fn decode<P: DeserializeOwned>(&self) -> Result<P, PayloadError> {
        P::deserialize(&self.payload).map_err(|e| self.malformed(e.to_string()))
    }

    /// The task, subtask and attempt, which every subtask message must carry.
    pub fn subtask_ref(&self) -> Result<(TaskId, &SubtaskId, u32), PayloadError> {
        match (self.task_id, &self.subtask_id, self.attempt) {
            (Some(t), Some(s), Some(a)) => Ok((t, s, a)),
            _ => Err(self.malformed("task_id, subtask_id and attempt are required".into())),
        }
    }

    fn malformed(&self, reason: String) -> PayloadError {
        PayloadError {
            id: self.id,
            kind: self.kind,
            reason,
        }
    }
}

/// The address of whichever worker of `role` takes a message.
pub fn role_address(role: &Role) -> String {
    format!("role:{role}")
}

/// A subtask handed to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAssign {
    /// The task's goal, for context.
    pub goal: String,
    /// The subtask's role.
    pub role: Role,
    /// Its title.
    pub title: String,
    /// What to do.
    pub instruction: String,
    /// The results of the subtasks it depends on, in plan order.
    pub dependencies: Vec<DependencyResult>,
    /// Facts from the task ledger.
    #[serde(default)]
    pub facts: Vec<String>,
    /// How long the worker has, in milliseconds, before the orchestrator gives up on this attempt.
    pub timeout_ms: u64,
    /// The topic to send progress and the result to.
    pub reply_to: String,
}

/// The result of a subtask another one depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DependencyResult {
    /// The subtask.
    pub id: SubtaskId,
    /// Its role.
    pub role: Role,
    /// Its title.
    pub title: String,
    /// Its output.
    pub result: String,
}

/// A worker's output for one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The output.
    pub output: String,
    /// LLM tokens the worker spent.
    #[serde(default)]
    pub usage: Usage,
}

/// A worker's failure for one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    /// What went wrong.
    pub message: String,
    /// Whether another attempt might succeed.
    pub retryable: bool,
    /// LLM tokens the worker spent before failing.
    #[serde(default)]
    pub usage: Usage,
}

/// A worker's progress on one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Progress {
    /// The worker took the subtask.
    Started,
    /// A note on how it goes.
    Note {
        /// The note.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_with_their_fixed_field_names() {
        let from = AgentId::new("orchestrator-1").unwrap();
        let env = Envelope::new(MessageKind::Progress, from, "inbox", &Progress::Started)
            .unwrap()
            .about(TaskId::new(), &SubtaskId::new("s1").unwrap(), 2);
        let json = serde_json::to_value(&env).unwrap();
        for field in [
            "id",
            "kind",
            "from",
            "to",
            "task_id",
            "subtask_id",
            "attempt",
            "payload",
            "created_at",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["kind"], "progress");
        assert_eq!(json["payload"], serde_json::json!({"stage": "started"}));
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.decode::<Progress>().unwrap(), Progress::Started);
    }

    #[test]
    fn a_payload_of_the_wrong_shape_is_an_error() {
        let from = AgentId::new("w-1").unwrap();
        let env = Envelope::new(
            MessageKind::TaskResult,
            from,
            "x",
            &serde_json::json!({"nope": 1}),
        )
        .unwrap();
        let err = env.decode::<TaskResult>().unwrap_err();
        assert!(err.to_string().contains("malformed task_result"));
        assert!(env.subtask_ref().is_err());
    }
}
