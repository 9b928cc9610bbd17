//! [`MemoryBus`]: the in-process bus, the embedded default.
//!
//! Each consumer group is a queue of ready messages plus a table of unacked
//! ones (delivered, not yet acked) ordered by their visibility deadline. There
//! is no reaper task: a consumer waiting for a message also sleeps until the
//! earliest deadline, and moves what expired back to the front of the queue
//! (or to the dead letters after `max_deliveries`). All locks are plain mutexes
//! held for a few instructions and never across an await; when two are held
//! at once, the order is: topics, then a group's state, then dead letters.
//!
//! Requeued dead letters go to the back of their group's queue with a fresh
//! delivery count. The worker registry is a [`WorkerTable`] in the bus.
//!
//! This module holds the bus, its subscriptions and acknowledgements; the
//! optional capabilities (dead letters, worker registry, queue depth) are in
//! `capabilities`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::registry::WorkerTable;
use super::{
    Acknowledger, Bus, BusError, DeadLetter, DeadLetters, Delivery, QueueDepth, Subscription,
    WorkerRegistry,
};
use crate::envelope::Envelope;
use crate::ids::AgentId;

mod capabilities;

/// Settings of a [`MemoryBus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBusConfig {
    /// How long a delivery stays invisible to other consumers before it is redelivered.
    pub visibility_timeout: Duration,
    /// Deliveries after which an unacked message goes to the dead letters.
    pub max_deliveries: u32,
    /// The most messages waiting in one group (or before any group exists).
    pub max_queue_len: usize,
    /// The most dead letters kept per topic; the oldest go first.
    pub max_dead_letters: usize,
}

impl Default for MemoryBusConfig {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(60),
            max_deliveries: 5,
            max_queue_len: 1_000_000,
            max_dead_letters: 10_000,
        }
    }
}

/// The in-process bus. Cloning it gives another handle to the same bus.
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    config: MemoryBusConfig,
    topics: Mutex<HashMap<String, TopicState>>,
    next_tag: AtomicU64,
    workers: WorkerTable,
}

#[derive(Debug, Default)]
struct TopicState {
    groups: HashMap<String, Arc<Group>>,
    /// Messages published before any group existed; the first group takes them.
    backlog: VecDeque<Arc<Envelope>>,
    dead: Arc<Mutex<VecDeque<DeadLetter>>>,
}

#[derive(Debug)]
struct Group {
    topic: Arc<str>,
    name: String,
    state: Mutex<GroupState>,
    notify: Notify,
    dead: Arc<Mutex<VecDeque<DeadLetter>>>,
    config: MemoryBusConfig,
}

#[derive(Debug, Default)]
struct GroupState {
    ready: VecDeque<Queued>,
    unacked: HashMap<u64, Unacked>,
    deadlines: BTreeSet<(Instant, u64)>,
}

#[derive(Debug)]
struct Queued {
    envelope: Arc<Envelope>,
    deliveries: u32,
}

#[derive(Debug)]
struct Unacked {
    envelope: Arc<Envelope>,
    deliveries: u32,
    deadline: Instant,
}

/// Locks a mutex, recovering the data if a thread panicked while holding it:
/// every critical section here leaves the state consistent at each step.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemoryBus {
    /// A bus with these settings.
    pub fn new(config: MemoryBusConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                ..Shared::default()
            }),
        }
    }

    /// The bus's settings.
    pub fn config(&self) -> &MemoryBusConfig {
        &self.shared.config
    }

    /// Messages waiting (not yet delivered) in `group` of `topic`.
    pub fn queue_len(&self, topic: &str, group: &str) -> usize {
        let topics = lock(&self.shared.topics);
        topics
            .get(topic)
            .and_then(|t| t.groups.get(group))
            .map_or(0, |g| lock(&g.state).ready.len())
    }
}

#[async_trait]
impl Bus for MemoryBus {
    fn name(&self) -> &str {
        "memory"
    }

    async fn publish(&self, topic: &str, envelope: Envelope) -> Result<(), BusError> {
        let envelope = Arc::new(envelope);
        let max = self.shared.config.max_queue_len;
        let mut topics = lock(&self.shared.topics);
        let state = topics.entry(topic.to_owned()).or_default();
        if state.groups.is_empty() {
            if state.backlog.len() >= max {
                return Err(BusError::Full {
                    topic: topic.to_owned(),
                    len: state.backlog.len(),
                });
            }
            state.backlog.push_back(envelope);
            return Ok(());
        }
        for group in state.groups.values() {
            let len = lock(&group.state).ready.len();
            if len >= max {
                return Err(BusError::Full {
                    topic: topic.to_owned(),
                    len,
                });
            }
        }
        for group in state.groups.values() {
            lock(&group.state).ready.push_back(Queued {
                envelope: envelope.clone(),
                deliveries: 0,
            });
            group.notify.notify_one();
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        _consumer: &AgentId,
    ) -> Result<Box<dyn Subscription>, BusError> {
        if topic.is_empty() || group.is_empty() {
            return Err(BusError::Invalid(
                "topic and group names must not be empty".into(),
            ));
        }
        let mut topics = lock(&self.shared.topics);
        let state = topics.entry(topic.to_owned()).or_default();
        let group = match state.groups.get(group) {
            Some(g) => g.clone(),
            None => {
                let g = Arc::new(Group {
                    topic: Arc::from(topic),
                    name: group.to_owned(),
                    state: Mutex::new(GroupState::default()),
                    notify: Notify::new(),
                    dead: state.dead.clone(),
                    config: self.shared.config.clone(),
                });
                let backlog = std::mem::take(&mut state.backlog);
                lock(&g.state)
                    .ready
                    .extend(backlog.into_iter().map(|envelope| Queued {
                        envelope,
                        deliveries: 0,
                    }));
                state.groups.insert(group.to_owned(), g.clone());
                g
            }
        };
        Ok(Box::new(MemorySubscription {
            group,
            shared: self.shared.clone(),
        }))
    }

    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        Some(self)
    }

    fn worker_registry(&self) -> Option<&dyn WorkerRegistry> {
        Some(self)
    }

    fn queue_depth(&self) -> Option<&dyn QueueDepth> {
        Some(self)
    }
}

struct MemorySubscription {
    group: Arc<Group>,
    shared: Arc<Shared>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        loop {
            let notified = self.group.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let wake_at = {
                let mut state = lock(&self.group.state);
                self.group.reap(&mut state, now);
                if let Some(queued) = state.ready.pop_front() {
                    let tag = self.shared.next_tag.fetch_add(1, Ordering::Relaxed);
                    let deliveries = queued.deliveries + 1;
                    let deadline = now + self.group.config.visibility_timeout;
                    let envelope = (*queued.envelope).clone();
                    state.deadlines.insert((deadline, tag));
                    state.unacked.insert(
                        tag,
                        Unacked {
                            envelope: queued.envelope,
                            deliveries,
                            deadline,
                        },
                    );
                    // Another consumer may be waiting and there may be more to take.
                    if !state.ready.is_empty() {
                        self.group.notify.notify_one();
                    }
                    let acker = MemoryAck {
                        group: self.group.clone(),
                        tag,
                    };
                    return Ok(Delivery::new(
                        envelope,
                        deliveries,
                        self.group.topic.clone(),
                        Box::new(acker),
                    ));
                }
                state.deadlines.first().map(|(at, _)| *at)
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

impl Group {
    /// Moves every unacked message whose deadline passed back to the queue, or
    /// to the dead letters once it has been delivered `max_deliveries` times.
    fn reap(&self, state: &mut GroupState, now: Instant) {
        while let Some(&(deadline, tag)) = state.deadlines.first() {
            if deadline > now {
                break;
            }
            state.deadlines.pop_first();
            if let Some(p) = state.unacked.remove(&tag) {
                self.requeue(state, p, "not acknowledged within the visibility timeout");
            }
        }
    }

    fn requeue(&self, state: &mut GroupState, p: Unacked, why: &str) {
        if p.deliveries >= self.config.max_deliveries {
            let reason = format!("{why} after {} deliveries", p.deliveries);
            self.bury(&p, &reason);
        } else {
            state.ready.push_front(Queued {
                envelope: p.envelope,
                deliveries: p.deliveries,
            });
        }
    }

    fn bury(&self, p: &Unacked, reason: &str) {
        tracing::warn!(topic = %self.topic, group = %self.name, message_id = %p.envelope.id,
            deliveries = p.deliveries, reason, "message moved to dead letters");
        let mut dead = lock(&self.dead);
        if dead.len() >= self.config.max_dead_letters {
            dead.pop_front();
        }
        dead.push_back(DeadLetter {
            topic: self.topic.to_string(),
            group: self.name.clone(),
            envelope: (*p.envelope).clone(),
            deliveries: p.deliveries,
            reason: reason.to_owned(),
            at: Utc::now(),
        });
    }

    fn take_unacked(&self, state: &mut GroupState, tag: u64) -> Option<Unacked> {
        let p = state.unacked.remove(&tag)?;
        state.deadlines.remove(&(p.deadline, tag));
        Some(p)
    }
}

struct MemoryAck {
    group: Arc<Group>,
    tag: u64,
}

#[async_trait]
impl Acknowledger for MemoryAck {
    async fn ack(&self) -> Result<(), BusError> {
        let mut state = lock(&self.group.state);
        self.group.take_unacked(&mut state, self.tag);
        Ok(())
    }

    async fn nack(&self) -> Result<(), BusError> {
        let mut state = lock(&self.group.state);
        if let Some(p) = self.group.take_unacked(&mut state, self.tag) {
            self.group
                .requeue(&mut state, p, "given back by its consumer");
            self.group.notify.notify_one();
        }
        Ok(())
    }

    async fn dead_letter(&self, reason: &str) -> Result<(), BusError> {
        let mut state = lock(&self.group.state);
        if let Some(p) = self.group.take_unacked(&mut state, self.tag) {
            self.group.bury(&p, reason);
        }
        Ok(())
    }

    async fn extend(&self) -> Result<(), BusError> {
        let mut state = lock(&self.group.state);
        if let Some(p) = self.group.take_unacked(&mut state, self.tag) {
            let deadline = Instant::now() + self.group.config.visibility_timeout;
            state.deadlines.insert((deadline, self.tag));
            state.unacked.insert(self.tag, Unacked { deadline, ..p });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
