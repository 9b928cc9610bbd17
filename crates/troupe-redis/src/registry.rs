//! The worker registry in Redis: one key per worker holding its last
//! heartbeat as JSON, expiring with the heartbeat's time to live (`PX`),
//! plus a sorted set of agent ids scored by expiry as the index to list them.
//!
//! Liveness is the key's existence, judged by Redis's own clock, so workers
//! with skewed clocks cannot keep each other listed. The index is only a
//! way to find the keys; members whose key expired are skipped, and dropped
//! from the index a minute after the expiry their heartbeat announced.

use std::time::Duration;

use chrono::Utc;
use redis::Value;
use troupe_core::bus::{BusError, WorkerInfo};

use crate::bus::Inner;
use crate::config::millis;
use crate::entry::bytes;
use crate::error::bus_error;

/// How long after its announced expiry an index member is dropped: leaves
/// room for clocks that disagree between workers.
const INDEX_GRACE: Duration = Duration::from_secs(60);

/// Registers or refreshes `info` for `ttl`.
pub(crate) async fn heartbeat(
    inner: &Inner,
    info: &WorkerInfo,
    ttl: Duration,
) -> Result<(), BusError> {
    if ttl < Duration::from_millis(1) {
        return Err(BusError::Invalid(
            "a heartbeat's time to live must be at least 1 ms".into(),
        ));
    }
    let json = serde_json::to_string(info)
        .map_err(|e| BusError::Invalid(format!("worker info cannot be encoded: {e}")))?;
    let agent = info.agent.as_str();
    let ttl_ms = millis(ttl);
    let now_ms = Utc::now().timestamp_millis();
    let expires = now_ms.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
    let index = inner.keys.workers();
    let mut conn = inner.conn.clone();
    redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(inner.keys.worker(agent))
        .arg(json)
        .arg("PX")
        .arg(ttl_ms)
        .ignore()
        .cmd("ZADD")
        .arg(&index)
        .arg(expires)
        .arg(agent)
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(&index)
        .arg("-inf")
        .arg(format!("({}", stale_before(now_ms)))
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| bus_error(&e))
}

/// The workers whose heartbeat has not expired, ordered by agent id.
pub(crate) async fn workers(inner: &Inner) -> Result<Vec<WorkerInfo>, BusError> {
    let index = inner.keys.workers();
    let now_ms = Utc::now().timestamp_millis();
    let mut conn = inner.conn.clone();
    let (agents,): (Vec<String>,) = redis::pipe()
        .cmd("ZREMRANGEBYSCORE")
        .arg(&index)
        .arg("-inf")
        .arg(format!("({}", stale_before(now_ms)))
        .ignore()
        .cmd("ZRANGE")
        .arg(&index)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .map_err(|e| bus_error(&e))?;
    if agents.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = agents.iter().map(|a| inner.keys.worker(a)).collect();
    let values: Vec<Value> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .map_err(|e| bus_error(&e))?;
    let mut live = Vec::with_capacity(values.len());
    for (agent, value) in agents.iter().zip(values) {
        if value == Value::Nil {
            continue;
        }
        let parsed = bytes(value).and_then(|b| {
            serde_json::from_slice::<WorkerInfo>(&b).map_err(|e| BusError::Invalid(e.to_string()))
        });
        match parsed {
            Ok(info) => live.push(info),
            Err(e) => tracing::warn!(agent, error = %e, "unreadable worker heartbeat skipped"),
        }
    }
    live.sort_by(|a, b| a.agent.cmp(&b.agent));
    Ok(live)
}

/// Index members announced to expire before this are dropped.
fn stale_before(now_ms: i64) -> i64 {
    now_ms.saturating_sub(i64::try_from(millis(INDEX_GRACE)).unwrap_or(0))
}
