//! Checkpoints on SQLite: numbered rows per task, trimmed to the newest
//! [`CHECKPOINTS_KEPT`] by the same write job that adds one.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use troupe_core::TaskId;
use troupe_core::store::{CHECKPOINTS_KEPT, Checkpoint, CheckpointStore, StoreError};

use super::tasks::TERMINAL;
use super::{SqliteStore, sql_error};
use crate::codec::{i64_of, millis, time, u64_col};

#[async_trait]
impl CheckpointStore for SqliteStore {
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let checkpoint = checkpoint.clone();
        let state = checkpoint.state.to_string();
        let kept = i64::try_from(CHECKPOINTS_KEPT).unwrap_or(i64::MAX);
        self.writer
            .write(move |conn| {
                let id = checkpoint.task;
                check_fence(conn, id, Some(checkpoint.epoch))?;
                let seq: i64 = conn
                    .prepare_cached(
                        "INSERT INTO checkpoints (task_id, seq, epoch, step, state, at) \
                         SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5 FROM checkpoints WHERE task_id = ?1 \
                         RETURNING seq",
                    )
                    .and_then(|mut stmt| {
                        stmt.query_row(
                            params![
                                id.to_string(),
                                i64_of(checkpoint.epoch),
                                i64_of(checkpoint.step),
                                state,
                                millis(checkpoint.at),
                            ],
                            |r| r.get(0),
                        )
                    })
                    .map_err(|e| sql_error(&e))?;
                conn.prepare_cached("DELETE FROM checkpoints WHERE task_id = ?1 AND seq <= ?2")
                    .and_then(|mut stmt| stmt.execute(params![id.to_string(), seq - kept]))
                    .map(drop)
                    .map_err(|e| sql_error(&e))
            })
            .await
    }

    async fn latest_checkpoint(&self, task: TaskId) -> Result<Option<Checkpoint>, StoreError> {
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT epoch, step, state, at FROM checkpoints WHERE task_id = ?1 \
                     ORDER BY seq DESC LIMIT 1",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![task.to_string()], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    })
                    .optional()
                })
                .map_err(|e| sql_error(&e))?;
            row.map(|(epoch, step, state, at)| {
                Ok(Checkpoint {
                    task,
                    epoch: u64_col("checkpoints.epoch", epoch)?,
                    step: u64_col("checkpoints.step", step)?,
                    state: serde_json::from_str(&state).map_err(|e| {
                        StoreError::Corrupt(format!("checkpoints.state of task {task}: {e}"))
                    })?,
                    at: time(at),
                })
            })
            .transpose()
        })
        .await
    }

    async fn prune_checkpoints(&self) -> Result<u64, StoreError> {
        self.writer
            .write(move |conn| {
                let removed = conn
                    .prepare_cached(&format!(
                        "DELETE FROM checkpoints WHERE task_id IN \
                         (SELECT id FROM tasks WHERE status IN {TERMINAL})"
                    ))
                    .and_then(|mut stmt| stmt.execute([]))
                    .map_err(|e| sql_error(&e))?;
                Ok(u64::try_from(removed).unwrap_or(u64::MAX))
            })
            .await
    }
}

/// Whether a write of `task` under `fence` (a lease epoch, if any) may go
/// ahead: `NotFound` if the task is missing, `Fenced` if its current lease
/// epoch (0: never leased) is not the fence. Called in the write's own job,
/// so no acquisition can come between the check and the write.
pub(super) fn check_fence(
    conn: &Connection,
    task: TaskId,
    fence: Option<u64>,
) -> Result<(), StoreError> {
    let Some(fence) = fence else {
        return Ok(());
    };
    let epoch: Option<i64> = conn
        .prepare_cached("SELECT lease_epoch FROM tasks WHERE id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row(params![task.to_string()], |r| r.get(0))
                .optional()
        })
        .map_err(|e| sql_error(&e))?;
    if epoch.ok_or(StoreError::NotFound(task))? != i64_of(fence) {
        return Err(StoreError::Fenced(task));
    }
    Ok(())
}
