//! [`RedisSubscription`]: one consumer's receive loop.
//!
//! Each call to `next` takes at most one entry at a time, in this order:
//!
//! 1. **recover**: after a call that may have been handed an entry without
//!    returning it (a dropped `next` future, a lost connection), or at the
//!    first call, entries pending for this consumer that no live delivery
//!    holds are claimed again (a previous process with the same consumer
//!    name left them too);
//! 2. **reclaim**: `XAUTOCLAIM` of one entry of the group pending longer than
//!    the visibility timeout (its consumer died or is stuck). Once a look
//!    finds none, the next waits one read block, so a busy consumer does not
//!    pay a round trip per message for it, and a timed-out entry still goes
//!    back within about a read block of its timeout while any consumer reads;
//! 3. **read**: `XREADGROUP ... >` of one new entry, blocking up to the
//!    configured `block`, at most half the visibility timeout.
//!
//! Only one entry is taken per turn, never a batch: an entry fetched but
//! not yet handed to the caller would age toward its visibility timeout
//! unseen. An entry for another group is acked and skipped; one that is not
//! an envelope is moved to the dead letters and reported as
//! [`BusError::Malformed`]; one delivered more than `max_deliveries` times
//! is moved to the dead letters.
//!
//! **Cancel safety.** The only state is on the server and in `dirty`, which
//! is set before any command that may hand this consumer an entry and
//! cleared only once that entry became a [`Delivery`] (with no await
//! between) or was settled. If the future is dropped in between, the next
//! call starts with recovery, so nothing waits for the visibility timeout;
//! the recovered entry counts as one more delivery (the lost read was one).
//! All of it runs on the subscription's own connection: a blocked read that
//! was abandoned is answered before recovery looks, because Redis answers
//! one connection's commands in order. Only when that connection itself
//! failed may an abandoned read be answered after recovery looked; that
//! entry then comes back after the visibility timeout, as the trait allows.
//!
//! **Failures.** Transient errors (Redis down, restarting, loading) are
//! retried here with capped exponential backoff and logged at `warn`; `next`
//! does not return them. When the stream or group is gone (`NOGROUP`, as
//! after a restart without persistence), the group is recreated at the
//! stream's start and reading goes on. Other errors are returned.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use tokio::time::Instant;
use troupe_core::bus::{BusError, Delivery, Subscription};

use crate::acker::{Fence, Held, RedisAck, Settle, Target, settle};
use crate::bus::Inner;
use crate::config::millis;
use crate::connection;
use crate::entry::{Incoming, RawEntry, first_read_entry, integer, text, unreadable};
use crate::error::{bus_error, is_no_group};

/// The first pause after a failure; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between two attempts while Redis is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A consumer's stream of deliveries from one topic and group.
pub(crate) struct RedisSubscription {
    inner: Arc<Inner>,
    target: Arc<Target>,
    /// Entries handed out whose deliveries are alive.
    held: Arc<Held>,
    /// This subscription's connection for blocking reads; `None` after an
    /// I/O error until the next attempt opens another.
    reader: Option<MultiplexedConnection>,
    /// Whether entries may be pending for this consumer that it never handed out.
    dirty: bool,
    /// Where the next `XAUTOCLAIM` scan of the group's pending entries starts.
    cursor: String,
    /// When to look for timed-out entries next.
    next_reclaim: Instant,
    /// When to trim the stream next.
    next_trim: Instant,
    /// Failures in a row, for the backoff.
    failures: u32,
}

/// What one turn of the loop came to.
enum Turn {
    /// A delivery for the caller.
    Deliver(Delivery),
    /// A malformed entry was set aside: tell the caller.
    SetAside(BusError),
    /// Nothing for the caller yet: go on.
    Again,
}

/// Why a turn failed.
enum Failure {
    /// Redis said no, or could not be reached.
    Redis(RedisError),
    /// A reply this crate cannot read.
    Reply(BusError),
}

impl From<RedisError> for Failure {
    fn from(e: RedisError) -> Self {
        Failure::Redis(e)
    }
}

impl From<BusError> for Failure {
    fn from(e: BusError) -> Self {
        Failure::Reply(e)
    }
}

/// An entry this consumer now holds, with its delivery count in the group.
struct Claim {
    entry: RawEntry,
    count: u32,
}

impl RedisSubscription {
    /// A subscription reading as `target` on its own connection `reader`.
    pub(crate) fn new(
        inner: Arc<Inner>,
        target: Arc<Target>,
        reader: MultiplexedConnection,
    ) -> Self {
        let next_trim = Instant::now() + inner.config.trim_interval;
        Self {
            inner,
            target,
            held: Arc::new(Held::default()),
            reader: Some(reader),
            dirty: true,
            cursor: "0-0".to_owned(),
            next_reclaim: Instant::now(),
            next_trim,
            failures: 0,
        }
    }

    /// One pass: recover, reclaim, read (see the module doc).
    async fn turn(&mut self) -> Result<Turn, Failure> {
        let mut conn = match &self.reader {
            Some(conn) => conn.clone(),
            None => {
                let conn = connection::reader(&self.inner.client, &self.inner.config).await?;
                self.reader = Some(conn.clone());
                conn
            }
        };
        if self.dirty {
            match self.recover(&mut conn).await? {
                // More may be left: stay dirty until recovery finds none.
                Some(claim) => return self.take(&mut conn, claim).await,
                None => self.dirty = false,
            }
        }
        if Instant::now() >= self.next_trim {
            self.trim().await;
        }
        self.dirty = true;
        let reclaimed = if Instant::now() >= self.next_reclaim {
            self.reclaim(&mut conn).await?
        } else {
            None
        };
        let turn = match reclaimed {
            Some(claim) => self.take(&mut conn, claim).await?,
            None => match self.read(&mut conn).await? {
                Some(entry) => self.take(&mut conn, Claim { entry, count: 1 }).await?,
                None => Turn::Again,
            },
        };
        self.dirty = false;
        Ok(turn)
    }

    /// Turns an entry this consumer now holds into a turn.
    async fn take(
        &mut self,
        conn: &mut MultiplexedConnection,
        claim: Claim,
    ) -> Result<Turn, Failure> {
        let Claim { entry, count } = claim;
        let t = &self.target;
        let fence = Fence {
            id: entry.id.clone(),
            count,
        };
        match Incoming::read(&entry, &t.group) {
            Incoming::NotOurs => {
                redis::cmd("XACK")
                    .arg(&t.stream)
                    .arg(&t.group)
                    .arg(&entry.id)
                    .query_async::<i64>(conn)
                    .await?;
                Ok(Turn::Again)
            }
            Incoming::Malformed { raw, reason, prior } => {
                let deliveries = prior.saturating_add(count);
                let why = format!("malformed: {reason}");
                let op = Settle::Dead {
                    deliveries,
                    reason: &why,
                    malformed: true,
                };
                if !settle(conn, &self.inner, t, &fence, &raw, &op).await? {
                    return Ok(Turn::Again);
                }
                tracing::warn!(topic = %t.topic, group = %t.group, entry = %entry.id, reason,
                    "unreadable message moved to dead letters");
                Ok(Turn::SetAside(BusError::Malformed {
                    topic: t.topic.to_string(),
                    reason,
                }))
            }
            Incoming::Message {
                envelope,
                raw,
                prior,
            } => {
                let deliveries = prior.saturating_add(count);
                if deliveries > self.inner.config.max_deliveries {
                    let buried = deliveries - 1;
                    let why = format!(
                        "not acknowledged within the visibility timeout after {buried} deliveries"
                    );
                    let op = Settle::Dead {
                        deliveries: buried,
                        reason: &why,
                        malformed: false,
                    };
                    if settle(conn, &self.inner, t, &fence, &raw, &op).await? {
                        tracing::warn!(topic = %t.topic, group = %t.group,
                            message_id = %envelope.id, deliveries = buried, reason = why,
                            "message moved to dead letters");
                    }
                    return Ok(Turn::Again);
                }
                self.held.hold(&entry.id);
                let acker = RedisAck {
                    inner: self.inner.clone(),
                    target: t.clone(),
                    fence,
                    prior,
                    raw,
                    message_id: envelope.id,
                    held: self.held.clone(),
                };
                Ok(Turn::Deliver(Delivery::new(
                    *envelope,
                    deliveries,
                    t.topic.clone(),
                    Box::new(acker),
                )))
            }
        }
    }

    /// Claims again an entry pending for this consumer that no delivery holds.
    async fn recover(&self, conn: &mut MultiplexedConnection) -> Result<Option<Claim>, Failure> {
        let t = &self.target;
        let mut call = self.inner.scripts.recover.prepare_invoke();
        call.key(&t.stream).arg(&t.group).arg(&t.consumer);
        for id in self.held.ids() {
            call.arg(id);
        }
        let reply: Value = call.invoke_async(conn).await?;
        let Value::Array(mut parts) = reply else {
            return Err(unreadable("the recover script's reply").into());
        };
        if parts.is_empty() {
            return Ok(None);
        }
        if parts.len() != 2 {
            return Err(unreadable("the recover script's reply").into());
        }
        let count = count(&parts[1])?;
        let entry = RawEntry::from_value(parts.swap_remove(0))?;
        tracing::debug!(topic = %t.topic, group = %t.group, entry = %entry.id,
            "recovered an entry this consumer had not handed out");
        Ok(Some(Claim { entry, count }))
    }

    /// Claims one entry of the group left pending past the visibility timeout.
    async fn reclaim(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Option<Claim>, Failure> {
        let t = &self.target;
        let reply: Value = self
            .inner
            .scripts
            .reclaim
            .key(&t.stream)
            .arg(&t.group)
            .arg(&t.consumer)
            .arg(millis(self.inner.config.visibility_timeout))
            .arg(&self.cursor)
            .invoke_async(conn)
            .await?;
        let Value::Array(mut parts) = reply else {
            return Err(unreadable("the reclaim script's reply").into());
        };
        if parts.len() != 1 && parts.len() != 3 {
            return Err(unreadable("the reclaim script's reply").into());
        }
        let claim = if parts.len() == 3 {
            let count = count(&parts[2])?;
            let entry = RawEntry::from_value(parts.swap_remove(1))?;
            Some(Claim { entry, count })
        } else {
            // None left now: look again after a read block.
            self.next_reclaim = Instant::now() + self.inner.config.read_block();
            None
        };
        self.cursor =
            text(parts.swap_remove(0)).ok_or_else(|| unreadable("the reclaim script's cursor"))?;
        Ok(claim)
    }

    /// Reads one new entry, waiting up to the read block.
    async fn read(&self, conn: &mut MultiplexedConnection) -> Result<Option<RawEntry>, Failure> {
        let t = &self.target;
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&t.group)
            .arg(&t.consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(millis(self.inner.config.read_block()))
            .arg("STREAMS")
            .arg(&t.stream)
            .arg(">")
            .query_async(conn)
            .await?;
        Ok(first_read_entry(reply)?)
    }

    /// Trims the stream of what every group acked; a failure only waits for
    /// the next trim.
    async fn trim(&mut self) {
        self.next_trim = Instant::now() + self.inner.config.trim_interval;
        let t = &self.target;
        let mut conn = self.inner.conn.clone();
        let trimmed: Result<u64, RedisError> = self
            .inner
            .scripts
            .trim
            .key(&t.stream)
            .arg(millis(self.inner.config.forget_consumers_after))
            .invoke_async(&mut conn)
            .await;
        match trimmed {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(topic = %t.topic, removed, "stream trimmed"),
            Err(e) => tracing::debug!(topic = %t.topic, error = %e, "trimming the stream failed"),
        }
    }

    /// Recreates the group after it vanished.
    async fn recreate_group(&mut self) -> Result<(), RedisError> {
        let t = self.target.clone();
        let mut conn = self.inner.conn.clone();
        self.inner
            .create_group(&mut conn, &t.stream, &t.group, true)
            .await?;
        // Entries this consumer held are gone with the group.
        self.cursor = "0-0".to_owned();
        self.next_reclaim = Instant::now();
        tracing::warn!(topic = %t.topic, group = %t.group,
            "the consumer group was gone (Redis restarted or the stream was deleted); recreated it");
        Ok(())
    }

    /// Handles a failed turn: `Some(error)` for the caller, or `None` after
    /// pausing, to try again.
    async fn recover_from(&mut self, failure: Failure) -> Option<BusError> {
        let err = match failure {
            Failure::Reply(e) => return Some(e),
            Failure::Redis(e) if is_no_group(&e) => match self.recreate_group().await {
                Ok(()) => return None,
                Err(e) => e,
            },
            Failure::Redis(e) => e,
        };
        let bus_err = bus_error(&err);
        if !bus_err.is_retryable() {
            return Some(bus_err);
        }
        if err.is_io_error() {
            self.reader = None;
        }
        self.failures = self.failures.saturating_add(1);
        let pause = backoff(self.failures);
        tracing::warn!(topic = %self.target.topic, group = %self.target.group,
            address = %self.inner.address, error = %err, retry_in = ?pause,
            "receiving from Redis failed; retrying");
        tokio::time::sleep(pause).await;
        None
    }
}

#[async_trait]
impl Subscription for RedisSubscription {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        loop {
            match self.turn().await {
                Ok(turn) => {
                    if self.failures > 0 {
                        tracing::info!(topic = %self.target.topic, group = %self.target.group,
                            "receiving from Redis again");
                        self.failures = 0;
                    }
                    match turn {
                        Turn::Deliver(delivery) => return Ok(delivery),
                        Turn::SetAside(err) => return Err(err),
                        Turn::Again => {}
                    }
                }
                Err(failure) => {
                    if let Some(err) = self.recover_from(failure).await {
                        return Err(err);
                    }
                }
            }
        }
    }
}

/// A delivery count from a script's reply.
fn count(value: &Value) -> Result<u32, BusError> {
    integer(value)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .ok_or_else(|| unreadable("a delivery count"))
}

/// The pause after `failures` failures in a row: doubling from
/// [`MIN_BACKOFF`] up to [`MAX_BACKOFF`], plus up to a quarter more so that
/// many consumers do not all come back at the same instant.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = MIN_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF);
    let spread = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    ) % (millis(base) / 4 + 1);
    base + Duration::from_millis(spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert!(backoff(1) >= MIN_BACKOFF && backoff(1) <= MIN_BACKOFF * 5 / 4);
        assert!(backoff(2) >= MIN_BACKOFF * 2);
        assert!(backoff(40) >= MAX_BACKOFF && backoff(40) <= MAX_BACKOFF * 5 / 4);
    }
}
