//! The task ledger on PostgreSQL.
//!
//! A subtask change and a task update are each one guarded `UPDATE`, made
//! with those of other tasks (`coalesced`): the change's guard and fields are
//! the very [`SubtaskChange::guard`] and [`SubtaskChange::fields`] the
//! in-memory ledger applies, so the two cannot drift apart. A task update is
//! refused once the task has ended or when its fence is not the lease epoch.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;
use troupe_core::ledger::{Applied, SubtaskChange};
use troupe_core::store::{StoreError, TaskQuery, TaskStore, TaskUpdate};
use troupe_core::task::{SubtaskRecord, TaskRecord, TaskSummary};
use troupe_core::{SubtaskId, TaskId};

use super::error::is_unique_violation;
use super::rows::{subtask_columns, subtask_row, summary_row, task_columns, task_row};
use super::{PostgresStore, pg_error};
use crate::codec::{i64_of, json_list};

/// The head of a listing: a few columns of each task and its subtask counts.
macro_rules! list_tasks {
    ($filter:literal) => {
        concat!(
            "SELECT t.id, t.goal, t.status, t.created_at, t.updated_at, \
               c.subtasks_total, c.subtasks_completed \
             FROM tasks t CROSS JOIN LATERAL ( \
               SELECT COUNT(*) AS subtasks_total, \
                 COUNT(*) FILTER (WHERE s.status = 'completed') AS subtasks_completed \
               FROM subtasks s WHERE s.task_id = t.id AND s.revision = t.plan_revision) c ",
            $filter,
            " ORDER BY t.id DESC LIMIT $1"
        )
    };
}

#[async_trait]
impl TaskStore for PostgresStore {
    async fn create_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        self.writers
            .write(task.id, task.clone(), |conn, task| {
                Box::pin(create(conn, task))
            })
            .await
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        // One statement, so the task and its subtasks come from one snapshot.
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            ", ",
            subtask_columns!(),
            " FROM tasks t LEFT JOIN subtasks s ON s.task_id = t.id WHERE t.id = $1 ORDER BY s.position"
        ))
        .bind(id.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut task = task_row(first)?;
        for row in &rows {
            if let Some(subtask) = subtask_row(row)? {
                task.subtasks.push(subtask);
            }
        }
        Ok(Some(task))
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskSummary>, StoreError> {
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        // One statement per filter, so each gets a plan that uses its index.
        let q = match (query.status, query.before) {
            (None, None) => sqlx::query(list_tasks!("")).bind(limit),
            (Some(status), None) => sqlx::query(list_tasks!("WHERE t.status = $2"))
                .bind(limit)
                .bind(status.as_str()),
            (None, Some(before)) => sqlx::query(list_tasks!("WHERE t.id < $2"))
                .bind(limit)
                .bind(before.as_uuid()),
            (Some(status), Some(before)) => {
                sqlx::query(list_tasks!("WHERE t.status = $2 AND t.id < $3"))
                    .bind(limit)
                    .bind(status.as_str())
                    .bind(before.as_uuid())
            }
        };
        let rows = q.fetch_all(&self.pool).await.map_err(pg_error)?;
        rows.iter().map(summary_row).collect()
    }

    async fn update_task(&self, id: TaskId, update: &TaskUpdate) -> Result<Applied, StoreError> {
        self.writers.update_task(id, update.clone()).await
    }

    async fn save_plan(
        &self,
        id: TaskId,
        revision: u32,
        facts: &[String],
        subtasks: &[SubtaskRecord],
    ) -> Result<(), StoreError> {
        let input = (id, revision, facts.to_vec(), subtasks.to_vec());
        self.writers
            .write(id, input, |conn, (id, revision, facts, subtasks)| {
                Box::pin(save_plan(conn, *id, *revision, facts, subtasks))
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
        self.writers
            .update_subtask(id, subtask.clone(), change.clone(), fence)
            .await
    }
}

/// Inserts a task and its subtasks.
async fn create(conn: &mut PgConnection, task: &TaskRecord) -> Result<(), StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO tasks (id, goal, status, result, error, facts, plan_revision, \
         prompt_tokens, completion_tokens, created_at, updated_at, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(task.id.as_uuid())
    .bind(&task.goal)
    .bind(task.status.as_str())
    .bind(&task.result)
    .bind(&task.error)
    .bind(&task.facts)
    .bind(i64::from(task.plan_revision))
    .bind(i64_of(task.usage.prompt_tokens))
    .bind(i64_of(task.usage.completion_tokens))
    .bind(task.created_at)
    .bind(task.updated_at)
    .bind(task.finished_at)
    .execute(&mut *conn)
    .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict(task.id)),
        Err(e) => return Err(pg_error(e)),
        Ok(_) => {}
    }
    insert_subtasks(conn, task.id, 0, &task.subtasks, task.created_at).await
}

/// Supersedes a task's open subtasks and appends a new plan's.
async fn save_plan(
    conn: &mut PgConnection,
    id: TaskId,
    revision: u32,
    facts: &[String],
    subtasks: &[SubtaskRecord],
) -> Result<(), StoreError> {
    let now = troupe_core::time::now();
    // Locks the task row first, so two plans of one task take turns.
    let updated = sqlx::query(
        "UPDATE tasks SET plan_revision = $2, facts = $3, updated_at = $4 WHERE id = $1",
    )
    .bind(id.as_uuid())
    .bind(i64::from(revision))
    .bind(facts)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(pg_error)?
    .rows_affected();
    if updated == 0 {
        return Err(StoreError::NotFound(id));
    }
    let superseded = SubtaskChange::Superseded;
    let open: Vec<&str> = superseded.guard().0.iter().map(|s| s.as_str()).collect();
    sqlx::query(
        "UPDATE subtasks SET status = $2, updated_at = $3 WHERE task_id = $1 AND status = ANY($4)",
    )
    .bind(id.as_uuid())
    .bind(superseded.next_status().as_str())
    .bind(now)
    .bind(&open)
    .execute(&mut *conn)
    .await
    .map_err(pg_error)?;
    let next: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(position) + 1, 0) FROM subtasks WHERE task_id = $1",
    )
    .bind(id.as_uuid())
    .fetch_one(&mut *conn)
    .await
    .map_err(pg_error)?;
    insert_subtasks(conn, id, next, subtasks, now).await
}

/// Adds `subtasks` to a task from `first_position` on, in one statement.
async fn insert_subtasks(
    conn: &mut PgConnection,
    id: TaskId,
    first_position: i64,
    subtasks: &[SubtaskRecord],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if subtasks.is_empty() {
        return Ok(());
    }
    let mut c = Columns::default();
    for (position, s) in (first_position..).zip(subtasks) {
        c.id.push(s.id.as_str());
        c.position.push(position);
        c.revision.push(i64::from(s.revision));
        c.role.push(s.role.as_str());
        c.title.push(&s.title);
        c.instruction.push(&s.instruction);
        c.depends_on.push(json_list(
            &s.depends_on.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        ));
        c.status.push(s.status.as_str());
        c.attempts.push(i64::from(s.attempts));
        c.result.push(s.result.as_deref());
        c.last_error.push(s.last_error.as_deref());
        c.agent.push(s.agent.as_ref().map(|a| a.as_str()));
    }
    // A text[] per row cannot go through UNNEST (it would flatten), so each
    // subtask's dependencies travel as a JSON array and are unpacked here.
    sqlx::query(
        "INSERT INTO subtasks (task_id, id, position, revision, role, title, instruction, depends_on, \
           status, attempts, result, last_error, agent, updated_at) \
         SELECT $1, u.id, u.position, u.revision, u.role, u.title, u.instruction, \
           ARRAY(SELECT jsonb_array_elements_text(u.depends_on::jsonb)), \
           u.status, u.attempts, u.result, u.last_error, u.agent, $2 \
         FROM UNNEST($3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::text[], \
           $9::text[], $10::text[], $11::bigint[], $12::text[], $13::text[], $14::text[]) \
           AS u(id, position, revision, role, title, instruction, depends_on, status, attempts, \
             result, last_error, agent)",
    )
    .bind(id.as_uuid())
    .bind(now)
    .bind(&c.id)
    .bind(&c.position)
    .bind(&c.revision)
    .bind(&c.role)
    .bind(&c.title)
    .bind(&c.instruction)
    .bind(&c.depends_on)
    .bind(&c.status)
    .bind(&c.attempts)
    .bind(&c.result)
    .bind(&c.last_error)
    .bind(&c.agent)
    .execute(conn)
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// The subtasks of a plan, column by column, for one `UNNEST` insert.
#[derive(Default)]
struct Columns<'a> {
    id: Vec<&'a str>,
    position: Vec<i64>,
    revision: Vec<i64>,
    role: Vec<&'a str>,
    title: Vec<&'a str>,
    instruction: Vec<&'a str>,
    depends_on: Vec<String>,
    status: Vec<&'a str>,
    attempts: Vec<i64>,
    result: Vec<Option<&'a str>>,
    last_error: Vec<Option<&'a str>>,
    agent: Vec<Option<&'a str>>,
}
