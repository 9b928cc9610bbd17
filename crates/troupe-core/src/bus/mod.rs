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
//! [`Bus`] is the transport. What operators need besides is in capability
//! traits a bus may offer: dead letters stay visible and can be put back on
//! their topic ([`DeadLetters`]), workers announce themselves and are listed
//! ([`WorkerRegistry`]), and topics tell how many messages wait
//! ([`QueueDepth`]).

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
    /// The bus does not offer what was asked of it.
    #[error("the {bus} bus has no {capability}")]
    Unsupported {
        /// The bus's name.
        bus: String,
        /// What it lacks (`dead letters`, `worker registry`, `queue depth`).
        capability: &'static str,
    },
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

/// A message bus: transport only. Share one as `Arc<dyn Bus>`.
///
/// What an operator needs besides sending and receiving is a separate
/// capability trait that a bus may offer: [`DeadLetters`], [`WorkerRegistry`]
/// and [`QueueDepth`], reached through [`dead_letters`](Bus::dead_letters),
/// [`worker_registry`](Bus::worker_registry) and
/// [`queue_depth`](Bus::queue_depth). A bus that does not offer one says so
/// (`None`), and whoever asked tells the user, instead of acting on an empty
/// answer. Decorators (retries, observation) implement only `name`,
/// `publish` and `subscribe`; the runtime asks the bus it was given, not the
/// decorated one, for capabilities.
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
///
/// // The memory bus keeps dead letters and a worker registry.
/// assert!(bus.dead_letters().is_some());
/// assert!(bus.worker_registry().is_some());
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

    /// The bus's dead letters, if it keeps them where they can be listed
    /// and put back.
    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        None
    }

    /// The bus's registry of live workers, if it keeps one.
    fn worker_registry(&self) -> Option<&dyn WorkerRegistry> {
        None
    }

    /// How many messages wait on a topic, if the bus can tell.
    fn queue_depth(&self) -> Option<&dyn QueueDepth> {
        None
    }
}

/// A capability a bus does not offer, as an error for whoever needed it.
pub fn unsupported(bus: &dyn Bus, capability: &'static str) -> BusError {
    BusError::Unsupported {
        bus: bus.name().to_owned(),
        capability,
    }
}

/// Messages set aside after too many deliveries or as unreadable: listed,
/// and put back on their topic by an operator.
///
/// ```
/// use troupe_core::bus::{Bus, MemoryBus};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let bus = MemoryBus::default();
/// let dead = bus.dead_letters().expect("the memory bus keeps dead letters");
/// assert!(dead.list("jobs").await.unwrap().is_empty());
/// assert_eq!(dead.requeue("jobs", None).await.unwrap(), 0);
/// # });
/// ```
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// The dead letters of `topic`, oldest first.
    async fn list(&self, topic: &str) -> Result<Vec<DeadLetter>, BusError>;

    /// Puts dead letters of `topic` back on it, each for the consumer group
    /// that gave up on it (other groups do not see it again), with a fresh
    /// delivery count, and removes them from the dead letters. `ids` names
    /// the messages (by [`Envelope::id`]) to put back; `None` puts back all
    /// of them. Returns how many were put back; ids that name no dead letter
    /// are skipped, and so are dead letters that hold no readable message
    /// (set aside as malformed): there is nothing to deliver.
    async fn requeue(&self, topic: &str, ids: Option<&[MessageId]>) -> Result<usize, BusError>;
}

/// Who is consuming, and how busy: each worker refreshes its entry with
/// [`heartbeat`](WorkerRegistry::heartbeat) well inside a time to live.
///
/// ```
/// use std::time::Duration;
/// use troupe_core::bus::{Bus, MemoryBus, WorkerInfo};
/// use troupe_core::AgentId;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let bus = MemoryBus::default();
/// let registry = bus.worker_registry().expect("the memory bus keeps a registry");
/// let me = WorkerInfo::new(AgentId::new("writer-1").unwrap(), "writer", 4, "localhost");
/// registry.heartbeat(&me, Duration::from_secs(30)).await.unwrap();
/// assert_eq!(registry.workers().await.unwrap(), vec![me]);
/// # });
/// ```
#[async_trait]
pub trait WorkerRegistry: Send + Sync {
    /// Registers a worker, or refreshes its entry: it stays listed by
    /// [`workers`](WorkerRegistry::workers) for `ttl` after this call unless
    /// refreshed again (a `ttl` under 1 ms is refused as [`BusError::Invalid`]).
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> Result<(), BusError>;

    /// The workers whose last heartbeat has not expired, ordered by agent id.
    async fn workers(&self) -> Result<Vec<WorkerInfo>, BusError>;
}

/// How many messages wait on a topic: for metrics and scaling.
///
/// ```
/// use troupe_core::bus::{Bus, MemoryBus};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let bus = MemoryBus::default();
/// let depth = bus.queue_depth().expect("the memory bus can tell");
/// assert_eq!(depth.depth("jobs").await.unwrap(), 0);
/// # });
/// ```
#[async_trait]
pub trait QueueDepth: Send + Sync {
    /// Messages of `topic` waiting to be delivered, summed over its consumer
    /// groups.
    async fn depth(&self, topic: &str) -> Result<u64, BusError>;
}

#[async_trait]
impl<B: Bus + ?Sized> Bus for Arc<B> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn publish(&self, topic: &str, envelope: Envelope) -> Result<(), BusError> {
        (**self).publish(topic, envelope).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &AgentId,
    ) -> Result<Box<dyn Subscription>, BusError> {
        (**self).subscribe(topic, group, consumer).await
    }

    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        (**self).dead_letters()
    }

    fn worker_registry(&self) -> Option<&dyn WorkerRegistry> {
        (**self).worker_registry()
    }

    fn queue_depth(&self) -> Option<&dyn QueueDepth> {
        (**self).queue_depth()
    }
}

impl fmt::Debug for dyn Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bus({})", self.name())
    }
}
