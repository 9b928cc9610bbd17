//! The task ledger on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, params};
use troupe_core::ledger::{Applied, SubtaskChange};
use troupe_core::store::{StoreError, TaskQuery, TaskStore, TaskUpdate};
use troupe_core::task::{SubtaskRecord, TaskRecord, TaskStatus, TaskSummary};
use troupe_core::{SubtaskId, TaskId};

use super::checkpoints::check_fence;
use super::rows::{load_task, summary_row};
use super::{SqliteStore, is_primary_key_violation, sql_error};
use crate::codec::{i64_of, json_list, millis};

/// The statuses of an ended task, as an SQL list.
pub(super) const TERMINAL: &str = "('completed', 'failed', 'cancelled')";

#[async_trait]
impl TaskStore for SqliteStore {
    async fn create_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        let task = task.clone();
        self.writer
            .write(move |conn| {
                let inserted = conn
                    .prepare_cached(
                        "INSERT INTO tasks (id, goal, status, result, error, facts, plan_revision, \
                         prompt_tokens, completion_tokens, created_at, updated_at, finished_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    )
                    .and_then(|mut stmt| {
                        stmt.execute(params![
                            task.id.to_string(),
                            task.goal,
                            task.status.as_str(),
                            task.result,
                            task.error,
                            json_list(&task.facts),
                            task.plan_revision,
                            i64_of(task.usage.prompt_tokens),
                            i64_of(task.usage.completion_tokens),
                            millis(task.created_at),
                            millis(task.updated_at),
                            task.finished_at.map(millis),
                        ])
                    });
                match inserted {
                    Err(e) if is_primary_key_violation(&e) => {
                        return Err(StoreError::Conflict(task.id));
                    }
                    Err(e) => return Err(sql_error(&e)),
                    Ok(_) => {}
                }
                insert_subtasks(conn, task.id, 0, &task.subtasks, millis(task.created_at))
            })
            .await
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.read(move |conn| load_task(conn, id)).await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskSummary>, StoreError> {
        let status = query.status.map(TaskStatus::as_str);
        let before = query.before.map(|b| b.to_string());
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT t.id, t.goal, t.status, t.created_at, t.updated_at, \
                       (SELECT COUNT(*) FROM subtasks s WHERE s.task_id = t.id AND s.revision = t.plan_revision), \
                       (SELECT COUNT(*) FROM subtasks s WHERE s.task_id = t.id AND s.revision = t.plan_revision \
                          AND s.status = 'completed') \
                     FROM tasks t \
                     WHERE (?1 IS NULL OR t.status = ?1) AND (?2 IS NULL OR t.id < ?2) \
                     ORDER BY t.id DESC LIMIT ?3",
                )
                .map_err(|e| sql_error(&e))?;
            let mut rows = stmt.query(params![status, before, limit]).map_err(|e| sql_error(&e))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(|e| sql_error(&e))? {
                out.push(summary_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn update_task(&self, id: TaskId, update: &TaskUpdate) -> Result<Applied, StoreError> {
        let update = update.clone();
        self.writer
            .write(move |conn| {
                check_fence(conn, id, update.fence)?;
                let at = millis(update.at);
                let finished = update.status.is_some_and(TaskStatus::is_terminal);
                let changed = conn
                    .prepare_cached(&format!(
                        "UPDATE tasks SET status = COALESCE(?2, status), result = COALESCE(?3, result), \
                         error = COALESCE(?4, error), prompt_tokens = COALESCE(?5, prompt_tokens), \
                         completion_tokens = COALESCE(?6, completion_tokens), updated_at = ?7, \
                         finished_at = CASE WHEN ?8 THEN ?7 ELSE finished_at END, \
                         owner = CASE WHEN ?8 THEN NULL ELSE owner END \
                         WHERE id = ?1 AND status NOT IN {TERMINAL}"
                    ))
                    .and_then(|mut stmt| {
                        stmt.execute(params![
                            id.to_string(),
                            update.status.map(TaskStatus::as_str),
                            update.result,
                            update.error,
                            update.usage.map(|u| i64_of(u.prompt_tokens)),
                            update.usage.map(|u| i64_of(u.completion_tokens)),
                            at,
                            finished,
                        ])
                    })
                    .map_err(|e| sql_error(&e))?;
                applied_or_missing(conn, id, changed)
            })
            .await
    }

    async fn save_plan(
        &self,
        id: TaskId,
        revision: u32,
        facts: &[String],
        subtasks: &[SubtaskRecord],
    ) -> Result<(), StoreError> {
        let facts = json_list(facts);
        let subtasks = subtasks.to_vec();
        self.writer
            .write(move |conn| {
                let now = millis(troupe_core::time::now());
                let updated = conn
                    .prepare_cached("UPDATE tasks SET plan_revision = ?2, facts = ?3, updated_at = ?4 WHERE id = ?1")
                    .and_then(|mut stmt| stmt.execute(params![id.to_string(), revision, facts, now]))
                    .map_err(|e| sql_error(&e))?;
                if updated == 0 {
                    return Err(StoreError::NotFound(id));
                }
                conn.prepare_cached(
                    "UPDATE subtasks SET status = 'superseded', updated_at = ?2 \
                     WHERE task_id = ?1 AND status IN ('pending', 'dispatched', 'running')",
                )
                .and_then(|mut stmt| stmt.execute(params![id.to_string(), now]))
                .map_err(|e| sql_error(&e))?;
                let next: i64 = conn
                    .prepare_cached("SELECT COALESCE(MAX(position) + 1, 0) FROM subtasks WHERE task_id = ?1")
                    .and_then(|mut stmt| stmt.query_row(params![id.to_string()], |r| r.get(0)))
                    .map_err(|e| sql_error(&e))?;
                insert_subtasks(conn, id, next, &subtasks, now)
            })
            .await
    }

    async fn update_subtask(
        &self,
        id: TaskId,
        subtask: &SubtaskId,
        change: &SubtaskChange,
        fence: Option<u64>,
    ) -> Result<Applied, StoreError> {
        let (statuses, attempt) = change.guard();
        if statuses.is_empty() {
            return Ok(Applied::Unchanged);
        }
        let allowed: Vec<String> = statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        // The guard's status list comes from our own constants, never from input.
        let sql = format!(
            "UPDATE subtasks SET status = ?3, attempts = COALESCE(?4, attempts), agent = COALESCE(?5, agent), \
             result = COALESCE(?6, result), last_error = COALESCE(?7, last_error), updated_at = ?8 \
             WHERE task_id = ?1 AND id = ?2 AND status IN ({}) AND (?9 IS NULL OR attempts = ?9)",
            allowed.join(", ")
        );
        let (new_attempts, agent, result, error) = match change {
            SubtaskChange::Dispatched { attempt } => (Some(*attempt), None, None, None),
            SubtaskChange::Started { agent, .. } => (None, Some(agent.to_string()), None, None),
            SubtaskChange::Completed { agent, result, .. } => {
                (None, Some(agent.to_string()), Some(result.clone()), None)
            }
            SubtaskChange::AttemptFailed { error, .. } => (None, None, None, Some(error.clone())),
            SubtaskChange::Superseded | SubtaskChange::Cancelled => (None, None, None, None),
        };
        let status = change.next_status().as_str();
        let subtask = subtask.to_string();
        self.writer
            .write(move |conn| {
                check_fence(conn, id, fence)?;
                let changed = conn
                    .prepare_cached(&sql)
                    .and_then(|mut stmt| {
                        stmt.execute(params![
                            id.to_string(),
                            subtask,
                            status,
                            new_attempts,
                            agent,
                            result,
                            error,
                            millis(troupe_core::time::now()),
                            attempt,
                        ])
                    })
                    .map_err(|e| sql_error(&e))?;
                applied_or_missing(conn, id, changed)
            })
            .await
    }
}

/// `Changed` if a row changed; otherwise `Unchanged` if the task exists, else `NotFound`.
fn applied_or_missing(
    conn: &Connection,
    id: TaskId,
    changed: usize,
) -> Result<Applied, StoreError> {
    if changed > 0 {
        return Ok(Applied::Changed);
    }
    let exists = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ?1)")
        .and_then(|mut stmt| stmt.query_row(params![id.to_string()], |r| r.get::<_, bool>(0)))
        .map_err(|e| sql_error(&e))?;
    if exists {
        Ok(Applied::Unchanged)
    } else {
        Err(StoreError::NotFound(id))
    }
}

fn insert_subtasks(
    conn: &Connection,
    id: TaskId,
    first_position: i64,
    subtasks: &[SubtaskRecord],
    now: i64,
) -> Result<(), StoreError> {
    if subtasks.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO subtasks (task_id, id, position, revision, role, title, instruction, depends_on, \
             status, attempts, result, last_error, agent, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .map_err(|e| sql_error(&e))?;
    for (position, s) in (first_position..).zip(subtasks) {
        stmt.execute(params![
            id.to_string(),
            s.id.as_str(),
            position,
            s.revision,
            s.role.as_str(),
            s.title,
            s.instruction,
            json_list(&s.depends_on.iter().map(|d| d.as_str()).collect::<Vec<_>>()),
            s.status.as_str(),
            s.attempts,
            s.result,
            s.last_error,
            s.agent.as_ref().map(|a| a.as_str()),
            now,
        ])
        .map_err(|e| sql_error(&e))?;
    }
    Ok(())
}
