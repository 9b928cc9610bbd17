//! The progress ledger on PostgreSQL.
//!
//! An append is one statement (with the appends of other tasks in the same
//! batch, see `coalesced::append`): it raises the task's `last_step` and
//! inserts the entry under the new number. Raising the counter locks the task's row
//! until its batch commits (see `writer`), so appends to one task from any number of
//! processes take turns and their steps run 1, 2, 3 without gaps or clashes;
//! appends to different tasks do not wait for each other.

use async_trait::async_trait;
use troupe_core::TaskId;
use troupe_core::ledger::{NewProgressEntry, ProgressEntry};
use troupe_core::store::{ProgressStore, StoreError};

use super::rows::{entry_columns, entry_row};
use super::{PostgresStore, pg_error};
use crate::codec::i64_of;

#[async_trait]
impl ProgressStore for PostgresStore {
    async fn append(&self, entry: NewProgressEntry) -> Result<ProgressEntry, StoreError> {
        self.writers.append(entry).await
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
