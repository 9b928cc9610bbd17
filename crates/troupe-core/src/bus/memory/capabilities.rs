//! The optional capabilities of [`MemoryBus`]: dead letters, the worker
//! registry and queue depth.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{MemoryBus, Queued, lock};
use crate::bus::{BusError, DeadLetter, DeadLetters, QueueDepth, WorkerInfo, WorkerRegistry};
use crate::ids::MessageId;

#[async_trait]
impl DeadLetters for MemoryBus {
    async fn list(&self, topic: &str) -> Result<Vec<DeadLetter>, BusError> {
        let topics = lock(&self.shared.topics);
        Ok(topics
            .get(topic)
            .map(|t| lock(&t.dead).iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn requeue(&self, topic: &str, ids: Option<&[MessageId]>) -> Result<usize, BusError> {
        let mut topics = lock(&self.shared.topics);
        let Some(state) = topics.get_mut(topic) else {
            return Ok(0);
        };
        // Take the chosen letters out first and release the dead-letter lock:
        // a group's state is locked before the dead letters everywhere else.
        let chosen: Vec<DeadLetter> = {
            let mut dead = lock(&state.dead);
            let (chosen, kept): (VecDeque<_>, VecDeque<_>) = dead
                .drain(..)
                .partition(|d| ids.is_none_or(|ids| ids.contains(&d.envelope.id)));
            *dead = kept;
            chosen.into()
        };
        let requeued = chosen.len();
        for letter in chosen {
            let envelope = Arc::new(letter.envelope);
            match state.groups.get(&letter.group) {
                Some(group) => {
                    lock(&group.state).ready.push_back(Queued {
                        envelope,
                        deliveries: 0,
                    });
                    group.notify.notify_one();
                }
                // Groups are never removed, so this is a letter from a bus
                // state we did not make; the next new group takes it.
                None => state.backlog.push_back(envelope),
            }
        }
        Ok(requeued)
    }
}

#[async_trait]
impl WorkerRegistry for MemoryBus {
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> Result<(), BusError> {
        self.shared.workers.refresh(info, ttl)
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, BusError> {
        Ok(self.shared.workers.live())
    }
}

#[async_trait]
impl QueueDepth for MemoryBus {
    async fn depth(&self, topic: &str) -> Result<u64, BusError> {
        let topics = lock(&self.shared.topics);
        let waiting = topics.get(topic).map_or(0, |t| {
            t.backlog.len()
                + t.groups
                    .values()
                    .map(|g| lock(&g.state).ready.len())
                    .sum::<usize>()
        });
        Ok(u64::try_from(waiting).unwrap_or(u64::MAX))
    }
}
