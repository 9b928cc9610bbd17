//! Task leases on SQLite: the lease is three columns of the task's row
//! (`owner`, `lease_epoch`, `lease_until`), changed by the writer thread.
//!
//! Every change is one guarded `UPDATE`, so two processes sharing the file
//! cannot both take a lease: SQLite runs their write transactions one after
//! the other and the second finds the lease held. "Now" is this machine's
//! clock (coordinators sharing a SQLite file share the machine).

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use troupe_core::store::{Lease, LeaseStore, StoreError};
use troupe_core::{AgentId, TaskId};

use super::tasks::TERMINAL;
use super::{SqliteStore, sql_error};
use crate::codec::{i64_of, millis, task_id, time, u64_col};

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    millis(troupe_core::time::now())
}

/// `ttl` in milliseconds, saturating.
fn ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn acquire(
        &self,
        task: TaskId,
        owner: &AgentId,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let owner = owner.clone();
        self.writer
            .write(move |conn| {
                let now = now_ms();
                let until = now.saturating_add(ms(ttl));
                let epoch: Option<i64> = conn
                    .prepare_cached(&format!(
                        "UPDATE tasks SET owner = ?2, lease_epoch = lease_epoch + 1, lease_until = ?3 \
                         WHERE id = ?1 AND status NOT IN {TERMINAL} \
                           AND (owner IS NULL OR lease_until IS NULL OR lease_until <= ?4) \
                         RETURNING lease_epoch"
                    ))
                    .and_then(|mut stmt| {
                        stmt.query_row(params![task.to_string(), owner.as_str(), until, now], |r| {
                            r.get(0)
                        })
                        .optional()
                    })
                    .map_err(|e| sql_error(&e))?;
                epoch
                    .map(|epoch| {
                        Ok(Lease {
                            task,
                            owner,
                            epoch: u64_col("tasks.lease_epoch", epoch)?,
                            expires_at: time(until),
                        })
                    })
                    .transpose()
            })
            .await
    }

    async fn renew(
        &self,
        owner: &AgentId,
        held: &[(TaskId, u64)],
        ttl: Duration,
    ) -> Result<Vec<TaskId>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let owner = owner.clone();
        let held = held.to_vec();
        self.writer
            .write(move |conn| {
                let until = now_ms().saturating_add(ms(ttl));
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "UPDATE tasks SET lease_until = ?4 \
                         WHERE id = ?1 AND lease_epoch = ?2 AND owner = ?3 AND status NOT IN {TERMINAL}"
                    ))
                    .map_err(|e| sql_error(&e))?;
                let mut kept = Vec::with_capacity(held.len());
                for (task, epoch) in held {
                    let changed = stmt
                        .execute(params![task.to_string(), i64_of(epoch), owner.as_str(), until])
                        .map_err(|e| sql_error(&e))?;
                    if changed > 0 {
                        kept.push(task);
                    }
                }
                Ok(kept)
            })
            .await
    }

    async fn release(&self, task: TaskId, owner: &AgentId, epoch: u64) -> Result<(), StoreError> {
        let owner = owner.clone();
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "UPDATE tasks SET owner = NULL WHERE id = ?1 AND lease_epoch = ?2 AND owner = ?3",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![task.to_string(), i64_of(epoch), owner.as_str()])
                })
                .map(drop)
                .map_err(|e| sql_error(&e))
            })
            .await
    }

    async fn orphaned(&self, grace: Duration, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let now = now_ms();
            let cutoff = now.saturating_sub(ms(grace));
            // The status condition repeats the partial index's, so SQLite can use it.
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT id FROM tasks \
                     WHERE status NOT IN {TERMINAL} \
                       AND ((lease_epoch = 0 AND created_at < ?1) \
                         OR (lease_epoch > 0 AND (owner IS NULL OR lease_until IS NULL OR lease_until <= ?2))) \
                     ORDER BY id LIMIT ?3"
                ))
                .map_err(|e| sql_error(&e))?;
            let mut rows = stmt
                .query(params![cutoff, now, limit])
                .map_err(|e| sql_error(&e))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(|e| sql_error(&e))? {
                let id: String = row.get(0).map_err(|e| sql_error(&e))?;
                out.push(task_id(&id)?);
            }
            Ok(out)
        })
        .await
    }
}
