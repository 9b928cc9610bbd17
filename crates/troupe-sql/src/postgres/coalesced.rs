//! The three writes a running task makes most (a progress append, a subtask
//! change, a task update), each for many tasks in one statement.
//!
//! A writer's batch holds writes of many tasks (see `writer`); the writes of
//! one kind, one per task, go to the server as columns of arrays and come
//! back as the ids of the rows they changed. One statement instead of one per
//! write saves the round trips that, on a small machine, cost more than the
//! work itself (the kernel's share of the CPU in a benchmark was half).
//!
//! Each statement is atomic on its own: its guard (a subtask's status and
//! attempt, a task's status and lease epoch) is checked on the row it
//! changes, under that row's lock. A write whose row did not change is told
//! why by one more read, for those writes only: the task is missing
//! ([`StoreError::NotFound`]), fenced off ([`StoreError::Fenced`]), or the
//! guard did not hold ([`Applied::Unchanged`]). None of these leave anything
//! behind, so they do not fail the batch.
//!
//! A statement that fails (a value the server refuses, a lost connection)
//! gives every write of it that error; the writer then runs the batch again,
//! each write alone (`writer`'s guarded mode).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use sqlx::Postgres;
use sqlx::postgres::{PgArguments, PgConnection};
use sqlx::query::QueryAs;
use sqlx::types::Uuid;
use troupe_core::ledger::{Applied, NewProgressEntry, ProgressEntry, SubtaskChange};
use troupe_core::store::{StoreError, TaskUpdate};
use troupe_core::task::TaskStatus;
use troupe_core::{SubtaskId, TaskId};

use super::pg_error;
use super::rows::terminal;
use super::writer::Queued;
use crate::codec::{data_json, i64_of, u64_col};

/// A subtask change, queued.
#[derive(Debug)]
pub(crate) struct SubtaskWrite {
    pub(crate) task: TaskId,
    pub(crate) subtask: SubtaskId,
    pub(crate) change: SubtaskChange,
    /// The writer's lease epoch, if it holds a lease.
    pub(crate) fence: Option<u64>,
}

/// A task update, queued.
#[derive(Debug)]
pub(crate) struct TaskWrite {
    pub(crate) task: TaskId,
    pub(crate) update: TaskUpdate,
}

/// Appends progress entries, at most one per task: each raises its task's
/// `last_step` and is inserted under the new number. False if the statement failed.
pub(crate) async fn append(
    conn: &mut PgConnection,
    writes: &mut [&mut Queued<NewProgressEntry, ProgressEntry>],
) -> bool {
    let c = AppendColumns::of(writes.iter().map(|w| &w.input));
    let rows = c
        .bind(sqlx::query_as::<_, (Uuid, i64)>(APPEND_SQL.as_str()))
        .fetch_all(&mut *conn)
        .await;
    settle_appends(conn, writes, rows).await
}

/// The common table expressions of an append whose eleven arrays are bound
/// from `$p` on: `input`, `next` (the raised counters of the tasks whose
/// lease epoch matches the entry's fence, if it has one) and `ins` (the
/// inserted entries' task and step).
pub(super) fn append_ctes(p: usize) -> String {
    let n: Vec<String> = (p..p + 11).map(|i| format!("${i}")).collect();
    format!(
        "input AS ( \
           SELECT * FROM UNNEST({}::uuid[], {}::timestamptz[], {}::text[], {}::text[], \
             {}::bigint[], {}::text[], {}::text[], {}::bigint[], {}::bigint[], {}::bigint[], \
             {}::text[]) \
           AS u(task_id, at, agent, subtask_id, attempt, event, detail, prompt_tokens, \
             completion_tokens, fence, data)), \
         next AS ( \
           UPDATE tasks t SET last_step = t.last_step + 1 FROM input i \
           WHERE t.id = i.task_id AND t.id = ANY({}) \
             AND (i.fence IS NULL OR t.lease_epoch = i.fence) \
           RETURNING t.id, t.last_step), \
         ins AS ( \
           INSERT INTO progress_entries (task_id, step, at, agent, subtask_id, attempt, \
             event, detail, prompt_tokens, completion_tokens, data) \
           SELECT i.task_id, n.last_step, i.at, i.agent, i.subtask_id, i.attempt, i.event, \
             i.detail, i.prompt_tokens, i.completion_tokens, i.data \
           FROM input i JOIN next n ON n.id = i.task_id \
           RETURNING task_id, step)",
        n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7], n[8], n[9], n[10], n[0]
    )
}

/// An append on its own.
static APPEND_SQL: LazyLock<String> =
    LazyLock::new(|| format!("WITH {} SELECT task_id, step FROM ins", append_ctes(1)));

/// Gives each append its outcome from the (task, step) rows the statement
/// returned: its entry under the new step; else `NotFound` when its task is
/// missing, `Fenced` when the task's lease epoch is not the entry's fence
/// (told by one more read, only for appends that got no step).
pub(super) async fn settle_appends(
    conn: &mut PgConnection,
    writes: &mut [&mut Queued<NewProgressEntry, ProgressEntry>],
    rows: Result<Vec<(Uuid, i64)>, sqlx::Error>,
) -> bool {
    let steps: HashMap<Uuid, i64> = match rows {
        Ok(rows) => rows.into_iter().collect(),
        Err(e) => return failed(writes, &pg_error(e)),
    };
    let appended = Ok(steps.keys().copied().collect());
    let epochs = match sort_out(conn, writes, |e| e.task_id, appended).await {
        Ok((_, epochs)) => epochs,
        Err(e) => return failed(writes, &e),
    };
    for w in writes.iter_mut() {
        let task = w.input.task_id;
        // Epochs only grow: one that differs now differed when the append ran.
        w.outcome = Some(
            match (steps.get(&task.as_uuid()), epochs.get(&task.as_uuid())) {
                (Some(&step), _) => u64_col("progress_entries.step", step)
                    .map(|step| w.input.clone().with_step(step)),
                (None, None) => Err(StoreError::NotFound(task)),
                (None, Some(_)) => Err(StoreError::Fenced(task)),
            },
        );
    }
    true
}

/// The entries of one [`append`], column by column.
#[derive(Default)]
pub(super) struct AppendColumns<'a> {
    task: Vec<Uuid>,
    at: Vec<chrono::DateTime<chrono::Utc>>,
    agent: Vec<&'a str>,
    subtask: Vec<Option<&'a str>>,
    attempt: Vec<Option<i64>>,
    event: Vec<&'a str>,
    detail: Vec<&'a str>,
    prompt: Vec<Option<i64>>,
    completion: Vec<Option<i64>>,
    fence: Vec<Option<i64>>,
    data: Vec<Option<String>>,
}

impl<'a> AppendColumns<'a> {
    pub(super) fn of(entries: impl Iterator<Item = &'a NewProgressEntry>) -> Self {
        let mut c = Self::default();
        for e in entries {
            c.task.push(e.task_id.as_uuid());
            c.at.push(e.at);
            c.agent.push(e.agent.as_str());
            c.subtask.push(e.subtask_id.as_ref().map(|s| s.as_str()));
            c.attempt.push(e.attempt.map(i64::from));
            c.event.push(e.event.as_str());
            c.detail.push(&e.detail);
            c.prompt.push(e.usage.map(|u| i64_of(u.prompt_tokens)));
            c.completion
                .push(e.usage.map(|u| i64_of(u.completion_tokens)));
            c.fence.push(e.fence.map(i64_of));
            c.data.push(e.data.as_ref().map(data_json));
        }
        c
    }

    /// Binds the eleven arrays, in the order of [`append_ctes`].
    pub(super) fn bind<'q, O>(&'q self, q: Query<'q, O>) -> Query<'q, O> {
        q.bind(&self.task)
            .bind(&self.at)
            .bind(&self.agent)
            .bind(&self.subtask)
            .bind(&self.attempt)
            .bind(&self.event)
            .bind(&self.detail)
            .bind(&self.prompt)
            .bind(&self.completion)
            .bind(&self.fence)
            .bind(&self.data)
    }
}

/// A statement returning rows of type `O`.
pub(super) type Query<'q, O> = QueryAs<'q, Postgres, O, PgArguments>;

/// Applies subtask changes, at most one per task, each guarded by
/// [`SubtaskChange::guard`] and writing [`SubtaskChange::fields`], as the
/// in-memory ledger's [`SubtaskChange::apply`] does. False if the statement failed.
pub(crate) async fn update_subtasks(
    conn: &mut PgConnection,
    writes: &mut [&mut Queued<SubtaskWrite, Applied>],
) -> bool {
    let c = SubtaskColumns::of(writes.iter().map(|w| &w.input));
    let changed = c
        .bind(sqlx::query_as::<_, (Uuid,)>(SUBTASK_UPDATE))
        .fetch_all(&mut *conn)
        .await
        .map(|rows| rows.into_iter().map(|(task,)| task).collect());
    settle_subtasks(conn, writes, changed).await
}

/// The guarded update of subtask changes, its ten arrays bound from `$2` on
/// (`$1` is the time), returning the task of each changed subtask. A fenced
/// change applies only while its task's lease epoch is the fence, as the
/// statement's snapshot sees it.
pub(super) const SUBTASK_UPDATE: &str = "UPDATE subtasks s SET status = u.next, \
       attempts = COALESCE(u.attempts, s.attempts), \
       agent = COALESCE(u.agent, s.agent), result = COALESCE(u.result, s.result), \
       last_error = COALESCE(u.last_error, s.last_error), updated_at = $1 \
     FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bigint[], \
       $8::text[], $9::text[], $10::text[], $11::bigint[]) \
       AS u(task_id, id, guard, guard_attempt, next, attempts, agent, result, last_error, fence) \
     WHERE s.task_id = ANY($2) AND s.task_id = u.task_id AND s.id = u.id \
       AND s.status = ANY(string_to_array(u.guard, ',')) \
       AND (u.guard_attempt IS NULL OR s.attempts = u.guard_attempt) \
       AND (u.fence IS NULL OR EXISTS ( \
         SELECT 1 FROM tasks t WHERE t.id = u.task_id AND t.lease_epoch = u.fence)) \
     RETURNING s.task_id";

/// Gives each subtask change its outcome from the tasks whose subtask the
/// statement `changed`: `Changed`; `NotFound` when the task is missing;
/// `Fenced` when its lease epoch is not the change's fence; else
/// `Unchanged` (the guard did not hold, or a plan of the task has no such subtask).
pub(super) async fn settle_subtasks(
    conn: &mut PgConnection,
    writes: &mut [&mut Queued<SubtaskWrite, Applied>],
    changed: Result<Vec<Uuid>, sqlx::Error>,
) -> bool {
    let (changed, epochs) = match sort_out(conn, writes, |w| w.task, changed).await {
        Ok(sorted) => sorted,
        Err(e) => return failed(writes, &e),
    };
    for w in writes.iter_mut() {
        let task = w.input.task;
        w.outcome = Some(guarded_outcome(task, &changed, &epochs, w.input.fence));
    }
    true
}

/// The changes of one [`update_subtasks`], column by column.
#[derive(Default)]
pub(super) struct SubtaskColumns<'a> {
    task: Vec<Uuid>,
    subtask: Vec<&'a str>,
    guard: Vec<String>,
    guard_attempt: Vec<Option<i64>>,
    next: Vec<&'a str>,
    attempts: Vec<Option<i64>>,
    agent: Vec<Option<&'a str>>,
    result: Vec<Option<&'a str>>,
    last_error: Vec<Option<&'a str>>,
    fence: Vec<Option<i64>>,
}

impl<'a> SubtaskColumns<'a> {
    pub(super) fn of(writes: impl Iterator<Item = &'a SubtaskWrite>) -> Self {
        let mut c = Self::default();
        for w in writes {
            let change = &w.change;
            let (statuses, attempt) = change.guard();
            let fields = change.fields();
            c.task.push(w.task.as_uuid());
            c.subtask.push(w.subtask.as_str());
            // Statuses are snake_case words: a comma-separated list is unambiguous
            // (a text[] per row cannot go through UNNEST, which would flatten it).
            c.guard.push(
                statuses
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            c.guard_attempt.push(attempt.map(i64::from));
            c.next.push(change.next_status().as_str());
            c.attempts.push(fields.attempts.map(i64::from));
            c.agent.push(fields.agent.map(|a| a.as_str()));
            c.result.push(fields.result);
            c.last_error.push(fields.last_error);
            c.fence.push(w.fence.map(i64_of));
        }
        c
    }

    /// Binds the time and the ten arrays, in the order of [`SUBTASK_UPDATE`].
    pub(super) fn bind<'q, O>(&'q self, q: Query<'q, O>) -> Query<'q, O> {
        q.bind(troupe_core::time::now())
            .bind(&self.task)
            .bind(&self.subtask)
            .bind(&self.guard)
            .bind(&self.guard_attempt)
            .bind(&self.next)
            .bind(&self.attempts)
            .bind(&self.agent)
            .bind(&self.result)
            .bind(&self.last_error)
            .bind(&self.fence)
    }
}

/// Applies task updates, at most one per task: none to a task that has
/// ended, none with a fence other than the task's lease epoch. False if the
/// statement failed.
pub(crate) async fn update_tasks(
    conn: &mut PgConnection,
    writes: &mut [&mut Queued<TaskWrite, Applied>],
) -> bool {
    let mut c = TaskColumns::default();
    for w in writes.iter() {
        let u = &w.input.update;
        c.task.push(w.input.task.as_uuid());
        c.status.push(u.status.map(TaskStatus::as_str));
        c.result.push(u.result.as_deref());
        c.error.push(u.error.as_deref());
        c.prompt.push(u.usage.map(|u| i64_of(u.prompt_tokens)));
        c.completion
            .push(u.usage.map(|u| i64_of(u.completion_tokens)));
        c.at.push(u.at);
        c.finished
            .push(u.status.is_some_and(TaskStatus::is_terminal));
        c.fence.push(u.fence.map(i64_of));
    }
    let changed: Result<Vec<Uuid>, _> = sqlx::query_scalar(concat!(
        "UPDATE tasks t SET status = COALESCE(u.status, t.status), \
           result = COALESCE(u.result, t.result), error = COALESCE(u.error, t.error), \
           prompt_tokens = COALESCE(u.prompt_tokens, t.prompt_tokens), \
           completion_tokens = COALESCE(u.completion_tokens, t.completion_tokens), \
           updated_at = u.at, \
           finished_at = CASE WHEN u.finished THEN u.at ELSE t.finished_at END, \
           owner = CASE WHEN u.finished THEN NULL ELSE t.owner END \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], \
           $7::timestamptz[], $8::boolean[], $9::bigint[]) \
           AS u(id, status, result, error, prompt_tokens, completion_tokens, at, finished, fence) \
         WHERE t.id = ANY($1) AND t.id = u.id AND t.status NOT IN ",
        terminal!(),
        " AND (u.fence IS NULL OR t.lease_epoch = u.fence) RETURNING t.id"
    ))
    .bind(&c.task)
    .bind(&c.status)
    .bind(&c.result)
    .bind(&c.error)
    .bind(&c.prompt)
    .bind(&c.completion)
    .bind(&c.at)
    .bind(&c.finished)
    .bind(&c.fence)
    .fetch_all(&mut *conn)
    .await;
    let (changed, epochs) = match sort_out(conn, writes, |w| w.task, changed).await {
        Ok(sorted) => sorted,
        Err(e) => return failed(writes, &e),
    };
    for w in writes.iter_mut() {
        let task = w.input.task;
        w.outcome = Some(guarded_outcome(
            task,
            &changed,
            &epochs,
            w.input.update.fence,
        ));
    }
    true
}

/// The updates of one [`update_tasks`], column by column.
#[derive(Default)]
struct TaskColumns<'a> {
    task: Vec<Uuid>,
    status: Vec<Option<&'a str>>,
    result: Vec<Option<&'a str>>,
    error: Vec<Option<&'a str>>,
    prompt: Vec<Option<i64>>,
    completion: Vec<Option<i64>>,
    at: Vec<chrono::DateTime<chrono::Utc>>,
    finished: Vec<bool>,
    fence: Vec<Option<i64>>,
}

/// Sorts out the writes of a guarded statement by what it `changed` (the
/// tasks whose row it changed): those tasks, and the lease epochs of the
/// other writes' tasks that exist (read with one more statement, only if
/// some write changed nothing).
async fn sort_out<I, T>(
    conn: &mut PgConnection,
    writes: &[&mut Queued<I, T>],
    task: impl Fn(&I) -> TaskId,
    changed: Result<Vec<Uuid>, sqlx::Error>,
) -> Result<(HashSet<Uuid>, HashMap<Uuid, i64>), StoreError> {
    let changed: HashSet<Uuid> = changed.map_err(pg_error)?.into_iter().collect();
    let missed: Vec<Uuid> = writes
        .iter()
        .map(|w| task(&w.input).as_uuid())
        .filter(|id| !changed.contains(id))
        .collect();
    if missed.is_empty() {
        return Ok((changed, HashMap::new()));
    }
    let rows: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT id, lease_epoch FROM tasks WHERE id = ANY($1)")
            .bind(&missed)
            .fetch_all(&mut *conn)
            .await
            .map_err(pg_error)?;
    Ok((changed, rows.into_iter().collect()))
}

/// The outcome of a guarded write of `task` (a subtask change, a task
/// update), from what [`sort_out`] found: `Changed` if its row changed; else
/// `NotFound` when the task is missing, `Fenced` when its lease epoch is not
/// the write's fence, and `Unchanged` when the guard did not hold. Epochs only
/// grow, so an epoch that differs now differed when the write ran.
fn guarded_outcome(
    task: TaskId,
    changed: &HashSet<Uuid>,
    epochs: &HashMap<Uuid, i64>,
    fence: Option<u64>,
) -> Result<Applied, StoreError> {
    if changed.contains(&task.as_uuid()) {
        return Ok(Applied::Changed);
    }
    match (epochs.get(&task.as_uuid()), fence) {
        (None, _) => Err(StoreError::NotFound(task)),
        (Some(&epoch), Some(fence)) if epoch != i64_of(fence) => Err(StoreError::Fenced(task)),
        (Some(_), _) => Ok(Applied::Unchanged),
    }
}

/// Gives every write of a failed statement its error; always false.
pub(super) fn failed<I, T>(writes: &mut [&mut Queued<I, T>], e: &StoreError) -> bool {
    for w in writes.iter_mut() {
        w.outcome = Some(Err(e.clone()));
    }
    false
}
