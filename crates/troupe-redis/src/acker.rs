//! Settling a delivery: ack, give back, bury, extend, each one atomic
//! [`SETTLE`](crate::scripts) script call that first checks the delivery is
//! still the caller's.
//!
//! A [`RedisAck`] is what a [`Delivery`](troupe_core::bus::Delivery) holds.
//! It also marks its entry as held by its subscription while it lives, so
//! that the subscription's recovery of lost reads leaves it alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::Utc;
use redis::aio::ConnectionLike;
use troupe_core::MessageId;
use troupe_core::bus::{Acknowledger, BusError};

use crate::bus::Inner;
use crate::error::bus_error;

/// The topic, group and consumer a subscription reads as, with the keys.
#[derive(Debug)]
pub(crate) struct Target {
    /// The topic.
    pub(crate) topic: Arc<str>,
    /// The topic's stream.
    pub(crate) stream: String,
    /// The topic's dead-letter stream.
    pub(crate) dead_letters: String,
    /// The consumer group.
    pub(crate) group: String,
    /// The consumer's name in the group.
    pub(crate) consumer: String,
}

/// Which delivery: its entry and the delivery count it was handed out with.
#[derive(Debug, Clone)]
pub(crate) struct Fence {
    /// The entry id.
    pub(crate) id: String,
    /// Its delivery count in the group's pending list when handed out.
    pub(crate) count: u32,
}

/// What to do with a delivery.
#[derive(Debug)]
pub(crate) enum Settle<'a> {
    /// Remove it for good.
    Ack,
    /// Restart its visibility timeout.
    Extend,
    /// Give it back to the group now, keeping its count of `deliveries`.
    Retry {
        /// Deliveries so far.
        deliveries: u32,
    },
    /// Move it to the dead letters.
    Dead {
        /// Deliveries so far.
        deliveries: u32,
        /// Why.
        reason: &'a str,
        /// Whether it could not be read.
        malformed: bool,
    },
}

/// Runs the settle script on `conn`; `Ok(false)` when the delivery was no
/// longer the caller's (taken over after a timeout, or its group gone).
pub(crate) async fn settle<C: ConnectionLike>(
    conn: &mut C,
    inner: &Inner,
    target: &Target,
    fence: &Fence,
    raw: &[u8],
    op: &Settle<'_>,
) -> Result<bool, redis::RedisError> {
    let mut call = inner.scripts.settle.prepare_invoke();
    call.key(&target.stream).key(&target.dead_letters);
    let name = match op {
        Settle::Ack => "ack",
        Settle::Extend => "extend",
        Settle::Retry { .. } => "retry",
        Settle::Dead { .. } => "dead",
    };
    call.arg(name)
        .arg(&target.group)
        .arg(&target.consumer)
        .arg(&fence.id)
        .arg(fence.count);
    match op {
        Settle::Ack | Settle::Extend => {}
        Settle::Retry { deliveries } => {
            call.arg(raw).arg(*deliveries);
        }
        Settle::Dead {
            deliveries,
            reason,
            malformed,
        } => {
            call.arg(raw)
                .arg(*deliveries)
                .arg(*reason)
                .arg(Utc::now().timestamp_millis())
                .arg(inner.config.max_dead_letters)
                .arg(if *malformed { "1" } else { "0" });
        }
    }
    let settled: i64 = call.invoke_async(conn).await?;
    Ok(settled == 1)
}

/// The entries a subscription has handed out and whose deliveries are alive
/// (counted: a message reclaimed by the same subscription is held twice).
#[derive(Debug, Default)]
pub(crate) struct Held {
    ids: Mutex<HashMap<String, usize>>,
}

impl Held {
    /// Marks `id` held by one more delivery.
    pub(crate) fn hold(&self, id: &str) {
        *self.lock().entry(id.to_owned()).or_default() += 1;
    }

    /// One delivery of `id` is gone.
    pub(crate) fn release(&self, id: &str) {
        let mut ids = self.lock();
        if let Some(n) = ids.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                ids.remove(id);
            }
        }
    }

    /// The ids held now.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Locks the map, recovering it if a thread panicked while holding the
    /// lock (each critical section leaves it consistent); never held across an await.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The acknowledger of one Redis delivery.
pub(crate) struct RedisAck {
    /// The bus.
    pub(crate) inner: Arc<Inner>,
    /// Where the delivery came from.
    pub(crate) target: Arc<Target>,
    /// Which delivery.
    pub(crate) fence: Fence,
    /// Deliveries the message had before its entry was written.
    pub(crate) prior: u32,
    /// The message as stored, to give back or bury unchanged.
    pub(crate) raw: Vec<u8>,
    /// The message's id, for logs.
    pub(crate) message_id: MessageId,
    /// The subscription's held entries, which this delivery leaves when dropped.
    pub(crate) held: Arc<Held>,
}

impl RedisAck {
    /// Deliveries so far, this one included.
    fn deliveries(&self) -> u32 {
        self.prior.saturating_add(self.fence.count)
    }

    async fn run(&self, op: &Settle<'_>) -> Result<(), BusError> {
        let mut conn = self.inner.conn.clone();
        let settled = settle(
            &mut conn,
            &self.inner,
            &self.target,
            &self.fence,
            &self.raw,
            op,
        )
        .await
        .map_err(|e| bus_error(&e))?;
        if !settled {
            tracing::debug!(topic = %self.target.topic, group = %self.target.group,
                message_id = %self.message_id, ?op,
                "the delivery is no longer this consumer's; nothing done");
        } else if let Settle::Dead {
            deliveries, reason, ..
        } = op
        {
            tracing::warn!(topic = %self.target.topic, group = %self.target.group,
                message_id = %self.message_id, deliveries, reason,
                "message moved to dead letters");
        }
        Ok(())
    }
}

#[async_trait]
impl Acknowledger for RedisAck {
    async fn ack(&self) -> Result<(), BusError> {
        self.run(&Settle::Ack).await
    }

    async fn nack(&self) -> Result<(), BusError> {
        let deliveries = self.deliveries();
        if deliveries >= self.inner.config.max_deliveries {
            let reason = format!("given back by its consumer after {deliveries} deliveries");
            self.run(&Settle::Dead {
                deliveries,
                reason: &reason,
                malformed: false,
            })
            .await
        } else {
            self.run(&Settle::Retry { deliveries }).await
        }
    }

    async fn dead_letter(&self, reason: &str) -> Result<(), BusError> {
        self.run(&Settle::Dead {
            deliveries: self.deliveries(),
            reason,
            malformed: false,
        })
        .await
    }

    async fn extend(&self) -> Result<(), BusError> {
        self.run(&Settle::Extend).await
    }
}

impl Drop for RedisAck {
    fn drop(&mut self) {
        self.held.release(&self.fence.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_counts_each_delivery_of_an_entry() {
        let held = Held::default();
        held.hold("1-0");
        held.hold("1-0");
        held.release("1-0");
        assert_eq!(held.ids(), vec!["1-0".to_owned()]);
        held.release("1-0");
        held.release("1-0");
        assert!(held.ids().is_empty());
    }
}
