//! The worker registry kept on the bus: who is consuming, and how busy.
//!
//! Each worker process refreshes its [`WorkerInfo`] with
//! [`WorkerRegistry::heartbeat`](super::WorkerRegistry::heartbeat) well inside a time to live; an
//! entry not refreshed within its time to live drops out of
//! [`WorkerRegistry::workers`](super::WorkerRegistry::workers). The registry is for operators and
//! metrics (who is up, with what capacity); liveness of a message is still the
//! bus's visibility timeout, never this registry.
//!
//! [`WorkerTable`] is the in-process registry the [`MemoryBus`](super::MemoryBus)
//! keeps; other buses keep theirs in their broker.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::BusError;
use crate::ids::AgentId;

/// What a worker says about itself in each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's agent id (the registry's key: one entry per agent).
    pub agent: AgentId,
    /// The role it serves (`researcher`, `writer`).
    pub role: String,
    /// How many deliveries it handles at once, at most.
    pub concurrency: u32,
    /// How many it is handling now.
    pub busy: u32,
    /// Its operating-system process id.
    pub pid: u32,
    /// The host it runs on.
    pub host: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it sent this heartbeat.
    pub last_seen: DateTime<Utc>,
}

impl WorkerInfo {
    /// A worker of `role` starting now in this process, idle.
    pub fn new(
        agent: AgentId,
        role: impl Into<String>,
        concurrency: u32,
        host: impl Into<String>,
    ) -> Self {
        let now = crate::time::now();
        Self {
            agent,
            role: role.into(),
            concurrency,
            busy: 0,
            pid: std::process::id(),
            host: host.into(),
            started_at: now,
            last_seen: now,
        }
    }
}

/// An in-process worker registry: each entry with the instant it expires.
///
/// The mutex is held for a few instructions and never across an await.
#[derive(Debug, Default)]
pub(crate) struct WorkerTable {
    entries: Mutex<HashMap<AgentId, (WorkerInfo, Instant)>>,
}

impl WorkerTable {
    /// Registers or refreshes `info` until `ttl` from now.
    pub(crate) fn refresh(&self, info: &WorkerInfo, ttl: Duration) -> Result<(), BusError> {
        if ttl < Duration::from_millis(1) {
            return Err(BusError::Invalid(
                "a heartbeat's time to live must be at least 1 ms".into(),
            ));
        }
        let expires = Instant::now() + ttl;
        self.lock()
            .insert(info.agent.clone(), (info.clone(), expires));
        Ok(())
    }

    /// The entries that have not expired, ordered by agent id; expired ones are dropped.
    pub(crate) fn live(&self) -> Vec<WorkerInfo> {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, (_, expires)| *expires > now);
        let mut live: Vec<WorkerInfo> = entries.values().map(|(info, _)| info.clone()).collect();
        live.sort_by(|a, b| a.agent.cmp(&b.agent));
        live
    }

    /// Locks the table, recovering it if a thread panicked while holding the
    /// lock: every critical section leaves the map consistent.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, (WorkerInfo, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
