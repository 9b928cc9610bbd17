//! The progress ledger on PostgreSQL.
//!
//! An append is one statement: it raises the task's `last_step` and inserts
//! the entry under the new number. Raising the counter locks the task's row
//! until its batch commits (see `writer`), so appends to one task from any number of
//! processes take turns and their steps run 1, 2, 3 without gaps or clashes;
//! appends to different tasks do not wait for each other.

use async_trait::async_trait;
use sqlx::postgres::PgConnection;
use troupe_core::TaskId;
use troupe_core::ledger::{NewProgressEntry, ProgressEntry};
use troupe_core::store::{ProgressStore, StoreError};

use super::rows::{entry_columns, entry_row};
use super::{PostgresStore, pg_error};
use crate::codec::{i64_of, u64_col};

#[async_trait]
impl ProgressStore for PostgresStore {
    async fn append(&self, entry: NewProgressEntry) -> Result<ProgressEntry, StoreError> {
        self.writers
            .write(entry.task_id, entry, |conn, entry| {
                Box::pin(append(conn, entry))
            })
            .await
    }

    async fn entries(
        &self,
        task: TaskId,
        after_step: u64,
        limit: usize,
    ) -> Result<Vec<ProgressEntry>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM progress_entries WHERE task_id = $1 AND step > $2 ORDER BY step LIMIT $3"
        ))
        .bind(task.as_uuid())
        .bind(i64_of(after_step))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        rows.iter().map(entry_row).collect()
    }
}

/// Numbers and inserts one entry.
async fn append(
    conn: &mut PgConnection,
    entry: &NewProgressEntry,
) -> Result<ProgressEntry, StoreError> {
    let step: Option<i64> = sqlx::query_scalar(
        "WITH next AS (UPDATE tasks SET last_step = last_step + 1 WHERE id = $1 RETURNING last_step) \
         INSERT INTO progress_entries (task_id, step, at, agent, subtask_id, attempt, event, detail, \
           prompt_tokens, completion_tokens) \
         SELECT $1, last_step, $2, $3, $4, $5, $6, $7, $8, $9 FROM next \
         RETURNING step",
    )
    .bind(entry.task_id.as_uuid())
    .bind(entry.at)
    .bind(entry.agent.as_str())
    .bind(entry.subtask_id.as_ref().map(|s| s.as_str()))
    .bind(entry.attempt.map(i64::from))
    .bind(entry.event.as_str())
    .bind(&entry.detail)
    .bind(entry.usage.map(|u| i64_of(u.prompt_tokens)))
    .bind(entry.usage.map(|u| i64_of(u.completion_tokens)))
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_error)?;
    let Some(step) = step else {
        return Err(StoreError::NotFound(entry.task_id));
    };
    Ok(entry
        .clone()
        .with_step(u64_col("progress_entries.step", step)?))
}
