//! Reading rows into domain records.

use rusqlite::{Connection, OptionalExtension, Row, params};
use troupe_core::ledger::ProgressEntry;
use troupe_core::store::StoreError;
use troupe_core::task::{SubtaskRecord, TaskRecord, TaskSummary, Usage};
use troupe_core::{AgentId, TaskId};

use super::sql_error;
use crate::codec::{parse, parse_ids, parse_list, step_data, task_id, time, u32_col, u64_col};

/// Reads a column, mapping SQLite's error.
fn col<T: rusqlite::types::FromSql>(row: &Row<'_>, i: usize) -> Result<T, StoreError> {
    row.get(i).map_err(|e| sql_error(&e))
}

const TASK_COLUMNS: &str = "id, goal, status, result, error, facts, plan_revision, \
     prompt_tokens, completion_tokens, created_at, updated_at, finished_at";

const SUBTASK_COLUMNS: &str = "id, revision, role, title, instruction, depends_on, status, attempts, result, last_error, agent";

pub(super) const ENTRY_COLUMNS: &str = "task_id, step, at, agent, subtask_id, attempt, event, detail, prompt_tokens, completion_tokens, data";

/// The task with its subtasks.
pub(super) fn load_task(conn: &Connection, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql).map_err(|e| sql_error(&e))?;
    let row = stmt
        .query_row(params![id.to_string()], |row| Ok(task_row(row)))
        .optional()
        .map_err(|e| sql_error(&e))?;
    let Some(task) = row.transpose()? else {
        return Ok(None);
    };
    let mut task = task;
    let sql =
        format!("SELECT {SUBTASK_COLUMNS} FROM subtasks WHERE task_id = ?1 ORDER BY position");
    let mut stmt = conn.prepare_cached(&sql).map_err(|e| sql_error(&e))?;
    let mut rows = stmt
        .query(params![id.to_string()])
        .map_err(|e| sql_error(&e))?;
    while let Some(row) = rows.next().map_err(|e| sql_error(&e))? {
        task.subtasks.push(subtask_row(row)?);
    }
    Ok(Some(task))
}

fn task_row(row: &Row<'_>) -> Result<TaskRecord, StoreError> {
    let facts: String = col(row, 5)?;
    Ok(TaskRecord {
        id: task_id(&col::<String>(row, 0)?)?,
        goal: col(row, 1)?,
        status: parse("tasks.status", &col::<String>(row, 2)?)?,
        result: col(row, 3)?,
        error: col(row, 4)?,
        facts: parse_list("tasks.facts", &facts)?,
        plan_revision: u32_col("tasks.plan_revision", col(row, 6)?)?,
        subtasks: Vec::new(),
        usage: Usage {
            prompt_tokens: u64_col("tasks.prompt_tokens", col(row, 7)?)?,
            completion_tokens: u64_col("tasks.completion_tokens", col(row, 8)?)?,
        },
        created_at: time(col(row, 9)?),
        updated_at: time(col(row, 10)?),
        finished_at: col::<Option<i64>>(row, 11)?.map(time),
    })
}

fn subtask_row(row: &Row<'_>) -> Result<SubtaskRecord, StoreError> {
    let agent: Option<String> = col(row, 10)?;
    Ok(SubtaskRecord {
        id: parse("subtasks.id", &col::<String>(row, 0)?)?,
        revision: u32_col("subtasks.revision", col(row, 1)?)?,
        role: parse("subtasks.role", &col::<String>(row, 2)?)?,
        title: col(row, 3)?,
        instruction: col(row, 4)?,
        depends_on: parse_ids("subtasks.depends_on", &col::<String>(row, 5)?)?,
        status: parse("subtasks.status", &col::<String>(row, 6)?)?,
        attempts: u32_col("subtasks.attempts", col(row, 7)?)?,
        result: col(row, 8)?,
        last_error: col(row, 9)?,
        agent: agent
            .map(|a| parse::<AgentId>("subtasks.agent", &a))
            .transpose()?,
    })
}

/// One task of a listing: the task's columns plus the two subtask counts.
pub(super) fn summary_row(row: &Row<'_>) -> Result<TaskSummary, StoreError> {
    Ok(TaskSummary {
        id: task_id(&col::<String>(row, 0)?)?,
        goal: col(row, 1)?,
        status: parse("tasks.status", &col::<String>(row, 2)?)?,
        created_at: time(col(row, 3)?),
        updated_at: time(col(row, 4)?),
        subtasks_total: u32_col("subtasks_total", col(row, 5)?)?,
        subtasks_completed: u32_col("subtasks_completed", col(row, 6)?)?,
    })
}

/// One progress entry, in [`ENTRY_COLUMNS`] order.
pub(super) fn entry_row(row: &Row<'_>) -> Result<ProgressEntry, StoreError> {
    let subtask: Option<String> = col(row, 4)?;
    let attempt: Option<i64> = col(row, 5)?;
    Ok(ProgressEntry {
        task_id: task_id(&col::<String>(row, 0)?)?,
        step: u64_col("progress_entries.step", col(row, 1)?)?,
        at: time(col(row, 2)?),
        agent: parse("progress_entries.agent", &col::<String>(row, 3)?)?,
        subtask_id: subtask
            .map(|s| parse("progress_entries.subtask_id", &s))
            .transpose()?,
        attempt: attempt
            .map(|a| u32_col("progress_entries.attempt", a))
            .transpose()?,
        event: parse("progress_entries.event", &col::<String>(row, 6)?)?,
        detail: col(row, 7)?,
        usage: match (col::<Option<i64>>(row, 8)?, col::<Option<i64>>(row, 9)?) {
            (Some(p), Some(c)) => Some(Usage {
                prompt_tokens: u64_col("progress_entries.prompt_tokens", p)?,
                completion_tokens: u64_col("progress_entries.completion_tokens", c)?,
            }),
            _ => None,
        },
        data: step_data(col(row, 10)?),
    })
}
