//! Task leases on PostgreSQL: three columns of the task's row (`owner`,
//! `lease_epoch`, `lease_until`), each change one guarded `UPDATE`.
//!
//! "Now" is the database's `now()`, so coordinators on machines whose clocks
//! disagree still agree on when a lease lapsed. Two coordinators racing to
//! acquire one task both try to update its row; the second waits for the
//! first's row lock, then re-checks the guard against the row as the first
//! left it, finds the lease live, and updates nothing.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgConnection;
use sqlx::types::Uuid;
use troupe_core::store::{Lease, LeaseStore, StoreError};
use troupe_core::{AgentId, TaskId};

use super::rows::{col, task_id_col, terminal};
use super::{PostgresStore, interval, pg_error};
use crate::codec::{i64_of, u64_col};

#[async_trait]
impl LeaseStore for PostgresStore {
    async fn acquire(
        &self,
        task: TaskId,
        owner: &AgentId,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        self.writers
            .write(
                task,
                (task, owner.clone(), ttl),
                |conn, (task, owner, ttl)| Box::pin(acquire(conn, *task, owner, *ttl)),
            )
            .await
    }

    async fn renew(
        &self,
        owner: &AgentId,
        held: &[(TaskId, u64)],
        ttl: Duration,
    ) -> Result<Vec<TaskId>, StoreError> {
        // One job per writer, each renewing the tasks routed to it, so that
        // no batch locks another writer's rows.
        let mut parts: Vec<Vec<(TaskId, u64)>> = vec![Vec::new(); self.writers.count()];
        for (task, epoch) in held {
            if let Some(part) = parts.get_mut(self.writers.route(*task)) {
                part.push((*task, *epoch));
            }
        }
        let renewals = parts
            .into_iter()
            .enumerate()
            .filter_map(|(n, part)| {
                let first = part.first()?.0;
                let input = (owner.clone(), part, ttl);
                Some(
                    self.writers
                        .write_on(n, first, input, |conn, (owner, part, ttl)| {
                            Box::pin(renew(conn, owner, part, *ttl))
                        }),
                )
            })
            .collect::<Vec<_>>();
        // Together: a write is queued only once its future is polled.
        let mut kept = Vec::new();
        for renewed in futures::future::join_all(renewals).await {
            kept.extend(renewed?);
        }
        // In the order asked, as the other stores answer.
        Ok(held
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| kept.contains(t))
            .collect())
    }

    async fn release(&self, task: TaskId, owner: &AgentId, epoch: u64) -> Result<(), StoreError> {
        self.writers
            .write(
                task,
                (task, owner.clone(), epoch),
                |conn, (task, owner, epoch)| Box::pin(release(conn, *task, owner, *epoch)),
            )
            .await
    }

    async fn orphaned(&self, grace: Duration, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        // The status condition repeats the partial index's (`tasks_open`), so the planner can use it.
        let rows = sqlx::query(concat!(
            "SELECT id FROM tasks WHERE status NOT IN ",
            terminal!(),
            " AND ((lease_epoch = 0 AND created_at < now() - $1) \
               OR (lease_epoch > 0 AND (owner IS NULL OR lease_until IS NULL OR lease_until <= now()))) \
             ORDER BY id LIMIT $2"
        ))
        .bind(interval(grace))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        rows.iter().map(|r| task_id_col(r, "id")).collect()
    }
}

/// Takes the lease of `task` if it is free or lapsed.
async fn acquire(
    conn: &mut PgConnection,
    task: TaskId,
    owner: &AgentId,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    let row = sqlx::query(concat!(
        "UPDATE tasks SET owner = $2, lease_epoch = lease_epoch + 1, lease_until = now() + $3 \
         WHERE id = $1 AND status NOT IN ",
        terminal!(),
        " AND (owner IS NULL OR lease_until IS NULL OR lease_until <= now()) \
         RETURNING lease_epoch, lease_until"
    ))
    .bind(task.as_uuid())
    .bind(owner.as_str())
    .bind(interval(ttl))
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_error)?;
    row.map(|row| {
        Ok(Lease {
            task,
            owner: owner.clone(),
            epoch: u64_col("tasks.lease_epoch", col(&row, "lease_epoch")?)?,
            expires_at: troupe_core::time::truncate(col(&row, "lease_until")?),
        })
    })
    .transpose()
}

/// Extends the leases of `held` that `owner` still holds; returns their tasks.
async fn renew(
    conn: &mut PgConnection,
    owner: &AgentId,
    held: &[(TaskId, u64)],
    ttl: Duration,
) -> Result<Vec<TaskId>, StoreError> {
    let ids: Vec<Uuid> = held.iter().map(|(t, _)| t.as_uuid()).collect();
    let epochs: Vec<i64> = held.iter().map(|(_, e)| i64_of(*e)).collect();
    let rows = sqlx::query(concat!(
        "UPDATE tasks t SET lease_until = now() + $2 \
         FROM UNNEST($3::uuid[], $4::bigint[]) AS h(id, epoch) \
         WHERE t.id = h.id AND t.lease_epoch = h.epoch AND t.owner = $1 AND t.status NOT IN ",
        terminal!(),
        " RETURNING t.id"
    ))
    .bind(owner.as_str())
    .bind(interval(ttl))
    .bind(&ids)
    .bind(&epochs)
    .fetch_all(&mut *conn)
    .await
    .map_err(pg_error)?;
    rows.iter().map(|r| task_id_col(r, "id")).collect()
}

/// Gives up the lease of `task` if `owner` holds it at `epoch`.
async fn release(
    conn: &mut PgConnection,
    task: TaskId,
    owner: &AgentId,
    epoch: u64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE tasks SET owner = NULL WHERE id = $1 AND lease_epoch = $2 AND owner = $3")
        .bind(task.as_uuid())
        .bind(i64_of(epoch))
        .bind(owner.as_str())
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
    Ok(())
}
