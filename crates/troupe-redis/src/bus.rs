//! [`RedisBus`]: the [`Bus`] on Redis Streams.
//!
//! One stream per topic; one Redis consumer group per bus group, so every
//! group gets every message and the consumers of a group compete for them.
//! How a message moves:
//!
//! - **publish**: `XADD` of the envelope's JSON (refused past
//!   [`max_message_bytes`](RedisBusConfig::max_message_bytes)).
//! - **subscribe**: creates the group with `MKSTREAM`, at `0` when it is the
//!   topic's first group (messages published before any group wait for it),
//!   else at `$` (a new group gets what is published from then on, as with
//!   the in-memory bus).
//! - **receive**: see [`subscription`](crate::subscription): `XREADGROUP`,
//!   and `XAUTOCLAIM` of what another consumer left pending past the
//!   visibility timeout.
//! - **ack** is `XACK`; **extend** is `XCLAIM ... JUSTID` to the same
//!   consumer (restarting the idle time without counting a delivery);
//!   **nack** writes the message again for its group only, with its count,
//!   and acks the old entry, so a waiting consumer gets it at once; **dead
//!   letter** adds it to the `:dlq` stream and acks it. All of them check
//!   first that the delivery is still the caller's ([`scripts`](crate::scripts)).
//!
//! Acked entries are not deleted one by one: with several groups on a topic
//! an `XDEL` would take a message from a group that has not read it yet.
//! Instead consumers trim the stream every
//! [`trim_interval`](RedisBusConfig::trim_interval) (and [`RedisBus::trim`]
//! does it on demand) with `XTRIM MINID ~` below the oldest entry that any
//! group still has pending or unread, so no entry that a group still needs
//! is ever dropped; a stream without groups is never trimmed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Client;
use redis::aio::ConnectionManager;
use troupe_core::bus::{
    Bus, BusError, DeadLetter, DeadLetters, QueueDepth, Subscription, WorkerInfo, WorkerRegistry,
};
use troupe_core::envelope::Envelope;
use troupe_core::{AgentId, MessageId};

use crate::acker::Target;
use crate::config::{RedisBusConfig, millis};
use crate::connection;
use crate::dead_letter::StoredLetter;
use crate::entry::{ENVELOPE, range_entries};
use crate::error::bus_error;
use crate::keys::{Keys, check_topic};
use crate::registry;
use crate::scripts::Scripts;
use crate::subscription::RedisSubscription;

/// The Redis Streams bus. Cloning it gives another handle to the same
/// connections.
///
/// ```no_run
/// use std::sync::Arc;
/// use troupe_core::bus::Bus;
/// use troupe_redis::{RedisBus, RedisBusConfig};
///
/// # async fn demo() -> Result<(), troupe_core::bus::BusError> {
/// let bus = RedisBus::connect("redis://127.0.0.1:6379", RedisBusConfig::default()).await?;
/// let bus: Arc<dyn Bus> = Arc::new(bus);
/// # let _ = bus;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

/// What the bus, its subscriptions and its deliveries share.
pub(crate) struct Inner {
    /// Opens each subscription's reading connection.
    pub(crate) client: Client,
    /// The shared, reconnecting command connection (cheap to clone).
    pub(crate) conn: ConnectionManager,
    /// The settings.
    pub(crate) config: RedisBusConfig,
    /// Key names.
    pub(crate) keys: Keys,
    /// The Lua scripts.
    pub(crate) scripts: Scripts,
    /// Where Redis is, without credentials, for logs.
    pub(crate) address: String,
}

impl Inner {
    /// Creates `group` on `stream` (see [`scripts`](crate::scripts)):
    /// at the start if `from_start` or if it is the first group.
    pub(crate) async fn create_group<C: redis::aio::ConnectionLike>(
        &self,
        conn: &mut C,
        stream: &str,
        group: &str,
        from_start: bool,
    ) -> Result<bool, redis::RedisError> {
        let created: i64 = self
            .scripts
            .create_group
            .key(stream)
            .arg(group)
            .arg(if from_start { "1" } else { "0" })
            .invoke_async(conn)
            .await?;
        Ok(created == 1)
    }
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("address", &self.inner.address)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]`,
    /// or `rediss://` for TLS).
    ///
    /// Fails with [`BusError::Invalid`] for a bad URL, bad settings, refused
    /// credentials or a Redis older than 6.2, and with the retryable
    /// [`BusError::Unavailable`] when Redis cannot be reached.
    pub async fn connect(url: &str, config: RedisBusConfig) -> Result<Self, BusError> {
        config.validate()?;
        let client = connection::client(url, config.tls_root_cert_pem.as_deref())?;
        let address = connection::address(&client);
        let mut conn = connection::manager(client.clone(), &config).await?;
        connection::check_version(&mut conn).await?;
        tracing::debug!(address = %address, "connected to Redis");
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                conn,
                keys: Keys::new(&config.key_prefix),
                config,
                scripts: Scripts::new(),
                address,
            }),
        })
    }

    /// The bus's settings.
    pub fn config(&self) -> &RedisBusConfig {
        &self.inner.config
    }

    /// Trims `topic`'s stream of entries every group has acknowledged now,
    /// rather than at a consumer's next periodic trim, and forgets consumers
    /// gone for good ([`RedisBusConfig::forget_consumers_after`]); returns
    /// how many entries were removed. Redis frees whole stream nodes only (by default at most 100
    /// entries or 4 KiB each), so a short stream may keep acked entries.
    pub async fn trim(&self, topic: &str) -> Result<u64, BusError> {
        check_topic(topic)?;
        let mut conn = self.inner.conn.clone();
        let removed: u64 = self
            .inner
            .scripts
            .trim
            .key(self.inner.keys.stream(topic))
            .arg(millis(self.inner.config.forget_consumers_after))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| bus_error(&e))?;
        Ok(removed)
    }

    /// The dead letters of `topic` as stored, oldest first.
    async fn stored_letters(&self, topic: &str) -> Result<Vec<StoredLetter>, BusError> {
        check_topic(topic)?;
        let mut conn = self.inner.conn.clone();
        let reply = redis::cmd("XRANGE")
            .arg(self.inner.keys.dead_letters(topic))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .map_err(|e| bus_error(&e))?;
        Ok(range_entries(reply)?
            .iter()
            .map(|entry| StoredLetter::read(topic, entry))
            .collect())
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn name(&self) -> &str {
        "redis"
    }

    async fn publish(&self, topic: &str, envelope: Envelope) -> Result<(), BusError> {
        check_topic(topic)?;
        let encoded = serde_json::to_vec(&envelope).map_err(|e| {
            BusError::Invalid(format!("message {} cannot be encoded: {e}", envelope.id))
        })?;
        let max = self.inner.config.max_message_bytes;
        if encoded.len() > max {
            return Err(BusError::Invalid(format!(
                "message {} is {} bytes encoded; the bus takes at most {max}",
                envelope.id,
                encoded.len()
            )));
        }
        let mut conn = self.inner.conn.clone();
        let _id: String = redis::cmd("XADD")
            .arg(self.inner.keys.stream(topic))
            .arg("*")
            .arg(ENVELOPE)
            .arg(encoded)
            .query_async(&mut conn)
            .await
            .map_err(|e| bus_error(&e))?;
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &AgentId,
    ) -> Result<Box<dyn Subscription>, BusError> {
        check_topic(topic)?;
        if group.is_empty() {
            return Err(BusError::Invalid("a group name must not be empty".into()));
        }
        let target = Arc::new(Target {
            topic: Arc::from(topic),
            stream: self.inner.keys.stream(topic),
            dead_letters: self.inner.keys.dead_letters(topic),
            group: group.to_owned(),
            consumer: consumer.to_string(),
        });
        let mut conn = self.inner.conn.clone();
        self.inner
            .create_group(&mut conn, &target.stream, group, false)
            .await
            .map_err(|e| bus_error(&e))?;
        // Opened now so that an unreachable Redis fails the subscribe, not
        // the first receive.
        let reader = connection::reader(&self.inner.client, &self.inner.config)
            .await
            .map_err(|e| bus_error(&e))?;
        Ok(Box::new(RedisSubscription::new(
            self.inner.clone(),
            target,
            reader,
        )))
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

#[async_trait]
impl DeadLetters for RedisBus {
    async fn list(&self, topic: &str) -> Result<Vec<DeadLetter>, BusError> {
        Ok(self
            .stored_letters(topic)
            .await?
            .into_iter()
            .map(|s| s.letter)
            .collect())
    }

    async fn requeue(&self, topic: &str, ids: Option<&[MessageId]>) -> Result<usize, BusError> {
        let letters = self.stored_letters(topic).await?;
        let stream = self.inner.keys.stream(topic);
        let dead_letters = self.inner.keys.dead_letters(topic);
        let mut conn = self.inner.conn.clone();
        let mut requeued = 0;
        for stored in letters {
            let Some(raw) = stored.raw else { continue };
            let letter = &stored.letter;
            if letter.group.is_empty() || ids.is_some_and(|ids| !ids.contains(&letter.envelope.id))
            {
                continue;
            }
            let moved: i64 = self
                .inner
                .scripts
                .requeue
                .key(&dead_letters)
                .key(&stream)
                .arg(&stored.entry_id)
                .arg(raw)
                .arg(&letter.group)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| bus_error(&e))?;
            if moved == 1 {
                requeued += 1;
                tracing::info!(topic, group = %letter.group, message_id = %letter.envelope.id,
                    "dead letter requeued");
            }
        }
        Ok(requeued)
    }
}

#[async_trait]
impl WorkerRegistry for RedisBus {
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> Result<(), BusError> {
        registry::heartbeat(&self.inner, info, ttl).await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, BusError> {
        registry::workers(&self.inner).await
    }
}

#[async_trait]
impl QueueDepth for RedisBus {
    async fn depth(&self, topic: &str) -> Result<u64, BusError> {
        check_topic(topic)?;
        let mut conn = self.inner.conn.clone();
        let waiting: u64 = self
            .inner
            .scripts
            .depth
            .key(self.inner.keys.stream(topic))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| bus_error(&e))?;
        Ok(waiting)
    }
}
