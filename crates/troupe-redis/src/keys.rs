//! The Redis keys the bus uses, all under the configured prefix.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}stream:{topic}` | stream | the topic's messages; one consumer group per bus group |
//! | `{prefix}stream:{topic}:dlq` | stream | the topic's dead letters, oldest first |
//! | `{prefix}worker:{agent}` | string | a worker's last heartbeat (JSON), expiring with its time to live |
//! | `{prefix}workers` | sorted set | agent ids scored by when their heartbeat expires: the registry's index |
//!
//! A topic may not end in `:dlq`, so that no topic's stream is another's
//! dead letters. The two keys of a topic are not in one Redis Cluster hash
//! slot: the bus expects a single Redis (or a primary with replicas).

use troupe_core::bus::BusError;

/// The suffix of a topic's dead-letter stream.
const DEAD_LETTER_SUFFIX: &str = ":dlq";

/// Makes the bus's key names.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The stream of `topic`.
    pub(crate) fn stream(&self, topic: &str) -> String {
        format!("{}stream:{topic}", self.prefix)
    }

    /// The dead-letter stream of `topic`.
    pub(crate) fn dead_letters(&self, topic: &str) -> String {
        format!("{}stream:{topic}{DEAD_LETTER_SUFFIX}", self.prefix)
    }

    /// The heartbeat of the worker `agent`.
    pub(crate) fn worker(&self, agent: &str) -> String {
        format!("{}worker:{agent}", self.prefix)
    }

    /// The index of registered workers.
    pub(crate) fn workers(&self) -> String {
        format!("{}workers", self.prefix)
    }
}

/// Refuses a topic the bus cannot name a stream for.
pub(crate) fn check_topic(topic: &str) -> Result<(), BusError> {
    if topic.is_empty() {
        return Err(BusError::Invalid("a topic name must not be empty".into()));
    }
    if topic.ends_with(DEAD_LETTER_SUFFIX) {
        return Err(BusError::Invalid(format!(
            "topic {topic:?} ends in {DEAD_LETTER_SUFFIX:?}, which names dead-letter streams"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keys_under_the_prefix() {
        let keys = Keys::new("troupe:");
        assert_eq!(keys.stream("role.writer"), "troupe:stream:role.writer");
        assert_eq!(
            keys.dead_letters("role.writer"),
            "troupe:stream:role.writer:dlq"
        );
        assert_eq!(keys.worker("writer-1"), "troupe:worker:writer-1");
        assert_eq!(keys.workers(), "troupe:workers");
    }

    #[test]
    fn refuses_topics_that_would_collide() {
        assert!(check_topic("role.writer").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("role.writer:dlq").is_err());
    }
}
