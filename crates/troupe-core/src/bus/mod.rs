//! The message bus seam: topics, consumer groups, explicit acknowledgement.
//!
//! Delivery is at least once. A consumer takes a [`Delivery`] and must
//! [`ack`](Delivery::ack) it once its effect is durable; a delivery not acked
//! within the bus's visibility timeout goes to another consumer of the group,
//! and after a bounded number of deliveries to the topic's dead letters. Each
//! consumer group of a topic gets every message once; the consumers of one
//! group compete for them. A message published before any group exists waits
//! for the first group, as in Redis Streams with a group created at `0`.
//!
//! Dead letters stay visible ([`Bus::dead_letters`]) and can be put back on
//! their topic ([`Bus::requeue_dead_letters`]). Workers announce themselves
//! with [`Bus::heartbeat`], and [`Bus::workers`] lists the live ones.

mod memory;
mod registry;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use memory::{MemoryBus, MemoryBusConfig};
pub use registry::WorkerInfo;

use crate::envelope::Envelope;
use crate::ids::{AgentId, MessageId};
use crate::role::Role;

/// Topic names.
pub mod topics {
    use super::{AgentId, Role};

    /// The topic a role's workers consume: `role.NAME`.
    pub fn role(role: &Role) -> String {
        format!("role.{role}")
    }

    /// The topic an agent receives replies on: `inbox.AGENT`.
    pub fn inbox(agent: &AgentId) -> String {
        format!("inbox.{agent}")
    }

    /// The consumer group of a role's workers.
    pub fn workers_group(role: &Role) -> String {
        format!("workers.{role}")
    }
}

/// A bus operation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The bus was shut down.
    #[error("the bus is closed")]
    Closed,
    /// The bus cannot be reached now; retry with backoff.
    #[error("the bus is unavailable: {0}")]
    Unavailable(String),
    /// A queue is at its bound; retry later.
    #[error("topic {topic} is full ({len} messages waiting)")]
    Full {
        /// The topic.
        topic: String,
        /// Messages waiting.
        len: usize,
    },
    /// A message on the bus could not be read; it was set aside.
    #[error("malformed message on {topic}: {reason}")]
    Malformed {
        /// The topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// A name or argument the bus does not accept.
    #[error("invalid bus request: {0}")]
    Invalid(String),
}

impl BusError {
    /// Whether the same operation may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BusError::Unavailable(_) | BusError::Full { .. })
    }
}

/// What a consumer does with a delivery; implemented by each bus.
#[async_trait]
pub trait Acknowledger: Send + Sync {
    /// The message is handled: remove it for good.
    async fn ack(&self) -> Result<(), BusError>;
    /// The message could not be handled now: deliver it again soon.
    async fn nack(&self) -> Result<(), BusError>;
    /// The message can never be handled: move it to the dead letters.
    async fn dead_letter(&self, reason: &str) -> Result<(), BusError>;
    /// Still working on it: restart the visibility timeout.
    async fn extend(&self) -> Result<(), BusError>;
}

/// One message handed to one consumer.
pub struct Delivery {
    /// The message.
    pub envelope: Envelope,
    /// How many times it was delivered, this time included (1 the first time).
    pub delivery_count: u32,
    /// The topic it came from.
    pub topic: Arc<str>,
    acker: Box<dyn Acknowledger>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.topic)
            .field("delivery_count", &self.delivery_count)
            .field("envelope", &self.envelope)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// A delivery; for bus implementations.
    pub fn new(
        envelope: Envelope,
        delivery_count: u32,
        topic: Arc<str>,
        acker: Box<dyn Acknowledger>,
    ) -> Self {
        Self {
            envelope,
            delivery_count,
            topic,
            acker,
        }
    }

    /// The message is handled: remove it for good. Acking a delivery that
    /// already timed out and went to another consumer does nothing.
    pub async fn ack(&self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    /// Deliver it again soon (to any consumer of the group).
    pub async fn nack(&self) -> Result<(), BusError> {
        self.acker.nack().await
    }

    /// Move it to the topic's dead letters, with the reason.
    pub async fn dead_letter(&self, reason: &str) -> Result<(), BusError> {
        self.acker.dead_letter(reason).await
    }

    /// Restart the visibility timeout while working on it.
    pub async fn extend(&self) -> Result<(), BusError> {
        self.acker.extend().await
    }
}

/// A message set aside after too many deliveries or as unreadable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The topic it was on.
    pub topic: String,
    /// The consumer group that gave up on it.
    pub group: String,
    /// The message.
    pub envelope: Envelope,
    /// How many times it was delivered.
    pub deliveries: u32,
    /// Why it was set aside.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A consumer's stream of deliveries from one topic and group.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; waits until there is one. Cancel-safe: dropping the
    /// future loses no message (at worst it is delivered again after the
    /// visibility timeout).
    ///
    /// An error ends nothing: the subscription stays usable and the caller
    /// calls `next` again (after a pause, for a retryable error), except after
    /// [`BusError::Closed`]. [`BusError::Malformed`] means one unreadable
    /// message was moved to the dead letters instead of being delivered.
    async fn next(&mut self) -> Result<Delivery, BusError>;
}

/// A message bus. Share one as `Arc<dyn Bus>`.
///
/// ```
/// use troupe_core::bus::{Bus, MemoryBus};
/// use troupe_core::envelope::{Envelope, MessageKind, Progress};
/// use troupe_core::AgentId;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let bus = MemoryBus::default();
/// let me = AgentId::new("worker-1").unwrap();
/// let mut sub = bus.subscribe("jobs", "workers", &me).await.unwrap();
///
/// let msg = Envelope::new(MessageKind::Progress, me.clone(), "jobs", &Progress::Started).unwrap();
/// bus.publish("jobs", msg.clone()).await.unwrap();
///
/// let delivery = sub.next().await.unwrap();
/// assert_eq!(delivery.envelope, msg);
/// assert_eq!(delivery.delivery_count, 1);
/// delivery.ack().await.unwrap(); // without this, it would be delivered again
/// # });
/// ```
#[async_trait]
pub trait Bus: Send + Sync {
    /// A short name for logs (`memory`, `redis`).
    fn name(&self) -> &str;

    /// Publishes a message to every consumer group of `topic`.
    async fn publish(&self, topic: &str, envelope: Envelope) -> Result<(), BusError>;

    /// Joins `group` on `topic` as `consumer`, creating the group if needed.
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &AgentId,
    ) -> Result<Box<dyn Subscription>, BusError>;

    /// The dead letters of `topic`, oldest first.
    async fn dead_letters(&self, topic: &str) -> Result<Vec<DeadLetter>, BusError>;

    /// Messages of `topic` waiting to be delivered (summed over its consumer
    /// groups), or `None` if this bus cannot tell. For metrics.
    async fn depth(&self, topic: &str) -> Result<Option<u64>, BusError> {
        let _ = topic;
        Ok(None)
    }

    /// Puts dead letters of `topic` back on it, each for the consumer group
    /// that gave up on it (other groups do not see it again), with a fresh
    /// delivery count, and removes them from the dead letters. `ids` names
    /// the messages (by [`Envelope::id`]) to put back; `None` puts back all
    /// of them. Returns how many were put back; ids that name no dead letter
    /// are skipped, and so are dead letters that hold no readable message
    /// (set aside as malformed): there is nothing to deliver.
    ///
    /// The default refuses: a bus that cannot requeue says so.
    async fn requeue_dead_letters(
        &self,
        topic: &str,
        ids: Option<&[MessageId]>,
    ) -> Result<usize, BusError> {
        let _ = (topic, ids);
        Err(BusError::Invalid(format!(
            "the {} bus does not support requeueing dead letters",
            self.name()
        )))
    }

    /// Registers a worker, or refreshes its entry: it stays listed by
    /// [`workers`](Bus::workers) for `ttl` after this call unless refreshed
    /// again (a `ttl` under 1 ms is refused as [`BusError::Invalid`]). The
    /// default keeps no registry and does nothing.
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> Result<(), BusError> {
        let _ = (info, ttl);
        Ok(())
    }

    /// The workers whose last heartbeat has not expired, ordered by agent id.
    /// The default keeps no registry and lists none.
    async fn workers(&self) -> Result<Vec<WorkerInfo>, BusError> {
        Ok(Vec::new())
    }
}

impl fmt::Debug for dyn Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bus({})", self.name())
    }
}
