//! The progress ledger on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, params};
use troupe_core::TaskId;
use troupe_core::ledger::{NewProgressEntry, ProgressEntry};
use troupe_core::store::{ProgressStore, StoreError};

use super::checkpoints::check_fence;
use super::rows::{ENTRY_COLUMNS, entry_row};
use super::{SqliteStore, is_foreign_key_violation, is_primary_key_violation, sql_error};
use crate::codec::{data_json, i64_of, millis, u64_col};

#[async_trait]
impl ProgressStore for SqliteStore {
    async fn append(&self, entry: NewProgressEntry) -> Result<ProgressEntry, StoreError> {
        let steps = self.steps.clone();
        self.writer
            .write(move |conn| {
                // The writer thread runs one job at a time, so the cached step cannot race
                // within this process; another process's append shows up as a key clash.
                check_fence(conn, entry.task_id, entry.fence)?;
                let cached = steps.lock().get(&entry.task_id).copied();
                let step = match cached {
                    Some(step) => step,
                    None => next_step(conn, entry.task_id)?,
                };
                let step = match insert(conn, &entry, step) {
                    Err(e) if cached.is_some() && is_primary_key_violation(&e) => {
                        let step = next_step(conn, entry.task_id)?;
                        insert(conn, &entry, step).map(|_| step)
                    }
                    other => other.map(|_| step),
                };
                match step {
                    Ok(step) => {
                        steps.set(entry.task_id, step + 1);
                        Ok(entry.with_step(step))
                    }
                    Err(e) if is_foreign_key_violation(&e) => {
                        Err(StoreError::NotFound(entry.task_id))
                    }
                    Err(e) => Err(sql_error(&e)),
                }
            })
            .await
    }

    async fn entries(
        &self,
        task: TaskId,
        after_step: u64,
        limit: usize,
    ) -> Result<Vec<ProgressEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let sql = format!(
                "SELECT {ENTRY_COLUMNS} FROM progress_entries WHERE task_id = ?1 AND step > ?2 ORDER BY step LIMIT ?3"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(|e| sql_error(&e))?;
            let mut rows =
                stmt.query(params![task.to_string(), i64_of(after_step), limit]).map_err(|e| sql_error(&e))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(|e| sql_error(&e))? {
                out.push(entry_row(row)?);
            }
            Ok(out)
        })
        .await
    }
}

/// The step after the task's last one, read from the table.
fn next_step(conn: &Connection, task: TaskId) -> Result<u64, StoreError> {
    let last: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(step), 0) FROM progress_entries WHERE task_id = ?1")
        .and_then(|mut stmt| stmt.query_row(params![task.to_string()], |r| r.get(0)))
        .map_err(|e| sql_error(&e))?;
    Ok(u64_col("progress_entries.step", last)? + 1)
}

fn insert(conn: &Connection, entry: &NewProgressEntry, step: u64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO progress_entries (task_id, step, at, agent, subtask_id, attempt, event, detail, \
         prompt_tokens, completion_tokens, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        entry.task_id.to_string(),
        i64_of(step),
        millis(entry.at),
        entry.agent.as_str(),
        entry.subtask_id.as_ref().map(|s| s.as_str()),
        entry.attempt,
        entry.event.as_str(),
        entry.detail,
        entry.usage.map(|u| i64_of(u.prompt_tokens)),
        entry.usage.map(|u| i64_of(u.completion_tokens)),
        entry.data.as_ref().map(data_json),
    ])
}
