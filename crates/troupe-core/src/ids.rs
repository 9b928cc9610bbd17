//! Identifiers: tasks, subtasks, agents and messages.
//!
//! Task and message ids are UUIDv7 (time-ordered, so the newest sort last in
//! an index). Subtask ids come from the plan an LLM wrote, so they are
//! validated strings; agent ids name a running agent such as `researcher-1`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of a task (one goal handed to Troupe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(Uuid);

impl TaskId {
    /// A new, time-ordered task id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| IdError::new("task id", s, "expected a UUID"))
    }
}

impl From<Uuid> for TaskId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

/// The id of a message on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A new, time-ordered message id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The longest subtask id accepted.
pub const MAX_SUBTASK_ID_LEN: usize = 64;

/// The id of a subtask inside one task, as written in the plan (`s1`, `research`).
///
/// Ids are 1 to 64 characters: ASCII letters, digits, `_`, `-` and `.`, starting
/// with a letter or digit, so they are safe in topics, logs and file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubtaskId(String);

impl SubtaskId {
    /// Validates and wraps a subtask id.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        if is_valid_subtask_id(&id) {
            Ok(Self(id))
        } else {
            Err(IdError::new(
                "subtask id",
                &id,
                "use 1 to 64 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit",
            ))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `id` is acceptable as a [`SubtaskId`].
pub fn is_valid_subtask_id(id: &str) -> bool {
    let mut chars = id.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    id.len() <= MAX_SUBTASK_ID_LEN
        && first.is_ascii_alphanumeric()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl fmt::Display for SubtaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SubtaskId {
    type Error = IdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<SubtaskId> for String {
    fn from(value: SubtaskId) -> Self {
        value.0
    }
}

impl FromStr for SubtaskId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// The id of a running agent: the orchestrator or one worker (`researcher-1`).
///
/// Same alphabet as [`SubtaskId`], up to 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(String);

impl AgentId {
    /// Validates and wraps an agent id.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        let mut chars = id.chars();
        let ok = id.len() <= 128
            && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if ok {
            Ok(Self(id))
        } else {
            Err(IdError::new(
                "agent id",
                &id,
                "use 1 to 128 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit",
            ))
        }
    }

    /// An id made of a prefix and a short random suffix, such as `orchestrator-3f9c2a1b`.
    pub fn unique(prefix: &str) -> Self {
        let suffix = Uuid::new_v4().simple().to_string();
        let prefix: String = prefix
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .take(100)
            .collect();
        let prefix = if prefix.is_empty() {
            "agent".to_owned()
        } else {
            prefix
        };
        Self(format!("{prefix}-{}", &suffix[..8]))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AgentId {
    type Error = IdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<AgentId> for String {
    fn from(value: AgentId) -> Self {
        value.0
    }
}

impl FromStr for AgentId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// An identifier that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {hint}")]
pub struct IdError {
    what: &'static str,
    value: String,
    hint: &'static str,
}

impl IdError {
    pub(crate) fn new(what: &'static str, value: &str, hint: &'static str) -> Self {
        let value = value.chars().take(80).collect();
        Self { what, value, hint }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtask_ids_are_validated() {
        assert!(SubtaskId::new("s1").is_ok());
        assert!(SubtaskId::new("r1-s2.b_3").is_ok());
        assert!(SubtaskId::new("").is_err());
        assert!(SubtaskId::new("-s1").is_err());
        assert!(SubtaskId::new("s 1").is_err());
        assert!(SubtaskId::new("a".repeat(65)).is_err());
        assert!(serde_json::from_str::<SubtaskId>("\"bad id\"").is_err());
    }

    #[test]
    fn agent_ids_round_trip_and_unique_ids_are_valid() {
        let id = AgentId::unique("orchestrator");
        assert!(id.as_str().starts_with("orchestrator-"));
        assert_eq!(AgentId::new(id.to_string()).unwrap(), id);
        assert!(AgentId::new("a b").is_err());
        assert!(AgentId::unique("!!").as_str().starts_with("agent-"));
    }

    #[test]
    fn task_ids_parse() {
        let id = TaskId::new();
        assert_eq!(id.to_string().parse::<TaskId>().unwrap(), id);
        assert!("nope".parse::<TaskId>().is_err());
    }
}
