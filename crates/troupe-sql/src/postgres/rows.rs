//! Reading PostgreSQL rows into domain records.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Uuid;
use troupe_core::ledger::ProgressEntry;
use troupe_core::store::StoreError;
use troupe_core::task::{SubtaskRecord, TaskRecord, TaskSummary, Usage};
use troupe_core::{AgentId, TaskId};

use crate::codec::{parse, step_data, u32_col, u64_col};

/// Reads a column by name; a value of the wrong type is corrupt data.
pub(super) fn col<'r, T>(row: &'r PgRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// A task id column.
pub(super) fn task_id_col(row: &PgRow, name: &str) -> Result<TaskId, StoreError> {
    Ok(TaskId::from(col::<Uuid>(row, name)?))
}

/// The columns [`task_row`] reads, qualified by `t` (a macro, so that
/// queries can be `concat!`ed into static SQL).
macro_rules! task_columns {
    () => {
        "t.id, t.goal, t.status, t.result, t.error, t.facts, t.plan_revision, t.prompt_tokens, \
         t.completion_tokens, t.created_at, t.updated_at, t.finished_at"
    };
}
pub(super) use task_columns;

/// The columns [`subtask_row`] reads, qualified by `s` and named apart from the task's.
macro_rules! subtask_columns {
    () => {
        "s.id AS s_id, s.revision AS s_revision, s.role AS s_role, s.title AS s_title, \
         s.instruction AS s_instruction, s.depends_on AS s_depends_on, s.status AS s_status, \
         s.attempts AS s_attempts, s.result AS s_result, s.last_error AS s_last_error, \
         s.agent AS s_agent"
    };
}
pub(super) use subtask_columns;

/// The columns [`entry_row`] reads.
macro_rules! entry_columns {
    () => {
        "task_id, step, at, agent, subtask_id, attempt, event, detail, prompt_tokens, completion_tokens, data"
    };
}
pub(super) use entry_columns;

/// The statuses of an ended task, as an SQL list.
macro_rules! terminal {
    () => {
        "('completed', 'failed', 'cancelled')"
    };
}
pub(super) use terminal;

/// A task without its subtasks, from [`task_columns!`].
pub(super) fn task_row(row: &PgRow) -> Result<TaskRecord, StoreError> {
    Ok(TaskRecord {
        id: task_id_col(row, "id")?,
        goal: col(row, "goal")?,
        status: parse("tasks.status", &col::<String>(row, "status")?)?,
        result: col(row, "result")?,
        error: col(row, "error")?,
        facts: col(row, "facts")?,
        plan_revision: u32_col("tasks.plan_revision", col(row, "plan_revision")?)?,
        subtasks: Vec::new(),
        usage: Usage {
            prompt_tokens: u64_col("tasks.prompt_tokens", col(row, "prompt_tokens")?)?,
            completion_tokens: u64_col("tasks.completion_tokens", col(row, "completion_tokens")?)?,
        },
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        finished_at: col::<Option<DateTime<Utc>>>(row, "finished_at")?,
    })
}

/// The subtask of a row from [`subtask_columns!`], if the row has one (a left join).
pub(super) fn subtask_row(row: &PgRow) -> Result<Option<SubtaskRecord>, StoreError> {
    let Some(id) = col::<Option<String>>(row, "s_id")? else {
        return Ok(None);
    };
    let depends_on: Vec<String> = col(row, "s_depends_on")?;
    let agent: Option<String> = col(row, "s_agent")?;
    Ok(Some(SubtaskRecord {
        id: parse("subtasks.id", &id)?,
        revision: u32_col("subtasks.revision", col(row, "s_revision")?)?,
        role: parse("subtasks.role", &col::<String>(row, "s_role")?)?,
        title: col(row, "s_title")?,
        instruction: col(row, "s_instruction")?,
        depends_on: depends_on
            .iter()
            .map(|d| parse("subtasks.depends_on", d))
            .collect::<Result<_, _>>()?,
        status: parse("subtasks.status", &col::<String>(row, "s_status")?)?,
        attempts: u32_col("subtasks.attempts", col(row, "s_attempts")?)?,
        result: col(row, "s_result")?,
        last_error: col(row, "s_last_error")?,
        agent: agent
            .map(|a| parse::<AgentId>("subtasks.agent", &a))
            .transpose()?,
    }))
}

/// One task of a listing: a few task columns plus the two subtask counts.
pub(super) fn summary_row(row: &PgRow) -> Result<TaskSummary, StoreError> {
    Ok(TaskSummary {
        id: task_id_col(row, "id")?,
        goal: col(row, "goal")?,
        status: parse("tasks.status", &col::<String>(row, "status")?)?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        subtasks_total: u32_col("subtasks_total", col(row, "subtasks_total")?)?,
        subtasks_completed: u32_col("subtasks_completed", col(row, "subtasks_completed")?)?,
    })
}

/// One progress entry, from [`entry_columns!`].
pub(super) fn entry_row(row: &PgRow) -> Result<ProgressEntry, StoreError> {
    let subtask: Option<String> = col(row, "subtask_id")?;
    let attempt: Option<i64> = col(row, "attempt")?;
    Ok(ProgressEntry {
        task_id: task_id_col(row, "task_id")?,
        step: u64_col("progress_entries.step", col(row, "step")?)?,
        at: col(row, "at")?,
        agent: parse("progress_entries.agent", &col::<String>(row, "agent")?)?,
        subtask_id: subtask
            .map(|s| parse("progress_entries.subtask_id", &s))
            .transpose()?,
        attempt: attempt
            .map(|a| u32_col("progress_entries.attempt", a))
            .transpose()?,
        event: parse("progress_entries.event", &col::<String>(row, "event")?)?,
        detail: col(row, "detail")?,
        usage: match (
            col::<Option<i64>>(row, "prompt_tokens")?,
            col::<Option<i64>>(row, "completion_tokens")?,
        ) {
            (Some(p), Some(c)) => Some(Usage {
                prompt_tokens: u64_col("progress_entries.prompt_tokens", p)?,
                completion_tokens: u64_col("progress_entries.completion_tokens", c)?,
            }),
            _ => None,
        },
        data: step_data(col(row, "data")?),
    })
}
