//! Checkpoints on PostgreSQL.
//!
//! Saving is one statement: it raises the task's `last_checkpoint` only if
//! the checkpoint's epoch is the task's lease epoch, inserts the checkpoint
//! under the new number, and deletes those older than the newest
//! [`CHECKPOINTS_KEPT`]. Raising the counter locks the task's row, so an
//! acquisition (which updates the same row) comes wholly before or after.

use async_trait::async_trait;
use sqlx::postgres::PgConnection;
use troupe_core::TaskId;
use troupe_core::store::{CHECKPOINTS_KEPT, Checkpoint, CheckpointStore, StoreError};

use super::rows::{col, terminal};
use super::{PostgresStore, pg_error};
use crate::codec::{i64_of, u64_col};

#[async_trait]
impl CheckpointStore for PostgresStore {
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.writers
            .write(checkpoint.task, checkpoint.clone(), |conn, checkpoint| {
                Box::pin(save(conn, checkpoint))
            })
            .await
    }

    async fn latest_checkpoint(&self, task: TaskId) -> Result<Option<Checkpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT epoch, step, state, at FROM checkpoints WHERE task_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(task.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?;
        row.map(|row| {
            Ok(Checkpoint {
                task,
                epoch: u64_col("checkpoints.epoch", col(&row, "epoch")?)?,
                step: u64_col("checkpoints.step", col(&row, "step")?)?,
                state: col(&row, "state")?,
                at: col(&row, "at")?,
            })
        })
        .transpose()
    }

    async fn prune_checkpoints(&self) -> Result<u64, StoreError> {
        let removed = sqlx::query(concat!(
            "DELETE FROM checkpoints c USING tasks t WHERE c.task_id = t.id AND t.status IN ",
            terminal!()
        ))
        .execute(&self.pool)
        .await
        .map_err(pg_error)?
        .rows_affected();
        Ok(removed)
    }
}

/// Numbers and inserts a checkpoint if its epoch is the lease's, and trims the old ones.
async fn save(conn: &mut PgConnection, checkpoint: &Checkpoint) -> Result<(), StoreError> {
    let id = checkpoint.task;
    let saved: Option<i64> = sqlx::query_scalar(
        "WITH next AS ( \
           UPDATE tasks SET last_checkpoint = last_checkpoint + 1 \
           WHERE id = $1 AND lease_epoch = $2 RETURNING last_checkpoint AS seq), \
         saved AS ( \
           INSERT INTO checkpoints (task_id, seq, epoch, step, state, at) \
           SELECT $1, seq, $2, $3, $4, $5 FROM next RETURNING seq), \
         trimmed AS ( \
           DELETE FROM checkpoints c USING next \
           WHERE c.task_id = $1 AND c.seq <= next.seq - $6) \
         SELECT seq FROM saved",
    )
    .bind(id.as_uuid())
    .bind(i64_of(checkpoint.epoch))
    .bind(i64_of(checkpoint.step))
    .bind(&checkpoint.state)
    .bind(checkpoint.at)
    .bind(i64::try_from(CHECKPOINTS_KEPT).unwrap_or(i64::MAX))
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_error)?;
    if saved.is_some() {
        return Ok(());
    }
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1)")
        .bind(id.as_uuid())
        .fetch_one(&mut *conn)
        .await
        .map_err(pg_error)?;
    Err(if exists {
        StoreError::Fenced(id)
    } else {
        StoreError::NotFound(id)
    })
}
