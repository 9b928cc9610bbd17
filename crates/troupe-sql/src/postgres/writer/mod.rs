//! Group commit: every write of a [`PostgresStore`](super::PostgresStore)
//! goes through a few writer tasks, each of which commits many writes at once.
//!
//! A commit waits for the server to flush its log (`synchronous_commit = on`):
//! a few milliseconds, and the bulk of a small write's cost. So a write is a
//! job queued to a writer; the writer takes every job waiting (up to
//! `max_batch`), runs them in one transaction, commits once, and only then
//! answers each caller. A caller's future therefore resolves after its write
//! is committed, as before; a hundred writes share one flush.
//!
//! # Routing
//!
//! There are `writers` writer tasks, each with its own connection; a job goes
//! to the writer its task id picks ([`Writers::route`]). All writes of one task
//! thus run in order on one connection, and a batch only ever locks rows of its
//! own writer's tasks: two writers of this process never wait for each other's
//! row locks, so they cannot deadlock. A write spanning several tasks (a lease
//! renewal) is split per writer by its caller. Within a batch, jobs run sorted
//! by task id (stably, so one task's jobs keep their order): batches of other
//! processes sorted alike take the tasks' row locks in one global order.
//!
//! # Rounds and coalescing
//!
//! The writes a running task makes most (progress appends, subtask changes,
//! task updates) are not closures but data, which `coalesced` writes for many
//! tasks in one statement. A batch is cut into *rounds*: round `r` holds each
//! task's `r`-th write of the batch, so a round has at most one write per task
//! and one task's writes still run in their order. Each round runs one
//! statement per kind of write it holds, then its other jobs one by one. (A
//! subtask change followed in the batch by the same task's progress entry is
//! first fused into one write, a `step`, written with one statement too.) A
//! batch of one round and one kind (the usual case when few tasks are
//! running) is one statement and needs no `BEGIN` and `COMMIT` around it: one
//! round trip, where one write used to take three.
//!
//! # Failures
//!
//! A batch first runs *optimistically*: the rounds one after another, with no
//! savepoints. Almost every batch succeeds as a whole, and a savepoint per job
//! would cost two more round trips each (`SAVEPOINT`, `RELEASE`) and one
//! subtransaction each: past 64 of them in one transaction PostgreSQL's
//! snapshot cache overflows, which slows every other session. When a job fails
//! (a duplicate id, a missing task, a lost lease) or a coalesced statement
//! fails, the batch is rolled back and run again *guarded*: each write alone,
//! inside its own savepoint, a failed one rolled back to it and answered with
//! its error while the others go on. Jobs are therefore closures that can run
//! more than once; they have no effect outside the transaction. (A coalesced
//! write whose row did not change, say a fenced task update, is an answer,
//! not a failure: it changed nothing.) (Measured on a 2-core machine, `troupe bench --llm mock`,
//! 2,000 tasks at concurrency 64: savepoints around every job gave 66 tasks/s,
//! this 114; the machine's CPU, not the log flush, is then the limit.)
//!
//! When the transaction itself breaks (the `COMMIT` fails, the connection is
//! lost, the server restarts), every job of the batch is answered with the
//! error, retryable [`StoreError::Unavailable`] where it is, and the writer's
//! connection is dropped so that the next batch gets a fresh one. A job whose
//! commit outcome is unknown may have been committed: the callers' retries are
//! keyed or guarded upstream, as they are for a single write.
//!
//! # Layout
//!
//! This module holds the handles ([`Writers`]) and the writer task loop,
//! which keeps its connection from batch to batch; `queued` the queued
//! writes and how each is answered; `batch` how one batch runs: fusing,
//! rounds, the optimistic and the guarded run.

mod batch;
mod queued;

use std::time::{Duration, Instant};

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use troupe_core::ledger::{Applied, NewProgressEntry, ProgressEntry, SubtaskChange};
use troupe_core::store::{StoreError, TaskUpdate};
use troupe_core::{SubtaskId, TaskId};

use super::coalesced::{SubtaskWrite, TaskWrite};
use super::pg_error;
use batch::{Failure, fuse, run_batch};
pub(crate) use queued::{BoxFuture, Queued};
use queued::{Closure, Routed, Write};

/// Handles to the writer tasks.
#[derive(Debug)]
pub(crate) struct Writers {
    queues: Vec<mpsc::UnboundedSender<Routed>>,
}

impl Writers {
    /// Starts `count` writer tasks on the current runtime, each taking its
    /// connections from `pool`; they end when the handles are dropped.
    pub(crate) fn spawn(pool: &PgPool, count: usize, max_batch: usize) -> Self {
        let queues = (0..count.max(1))
            .map(|n| {
                let (queue, jobs) = mpsc::unbounded_channel();
                let writer = Writer {
                    pool: pool.clone(),
                    max_batch: max_batch.max(1),
                };
                tokio::spawn(writer.run(jobs, n));
                queue
            })
            .collect();
        Self { queues }
    }

    /// How many writers there are.
    pub(crate) fn count(&self) -> usize {
        self.queues.len()
    }

    /// The writer that runs the writes of `task`.
    pub(crate) fn route(&self, task: TaskId) -> usize {
        let n = u128::try_from(self.queues.len()).unwrap_or(1);
        usize::try_from(task.as_uuid().as_u128() % n).unwrap_or(0)
    }

    /// Appends a progress entry (see `coalesced::append`).
    pub(crate) async fn append(
        &self,
        entry: NewProgressEntry,
    ) -> Result<ProgressEntry, StoreError> {
        let task = entry.task_id;
        self.queue(self.route(task), task, |reply| {
            Write::Append(Queued::new(entry, reply))
        })
        .await
    }

    /// Applies a subtask change (see `coalesced::update_subtasks`).
    pub(crate) async fn update_subtask(
        &self,
        task: TaskId,
        subtask: SubtaskId,
        change: SubtaskChange,
        fence: Option<u64>,
    ) -> Result<Applied, StoreError> {
        let input = SubtaskWrite {
            task,
            subtask,
            change,
            fence,
        };
        self.queue(self.route(task), task, |reply| {
            Write::Subtask(Queued::new(input, reply))
        })
        .await
    }

    /// Updates a task (see `coalesced::update_tasks`).
    pub(crate) async fn update_task(
        &self,
        task: TaskId,
        update: TaskUpdate,
    ) -> Result<Applied, StoreError> {
        let input = TaskWrite { task, update };
        self.queue(self.route(task), task, |reply| {
            Write::Task(Queued::new(input, reply))
        })
        .await
    }

    /// Runs `write(conn, &input)` in a batch of the writer of `task` and
    /// returns its outcome once the batch is committed. `write` may run twice
    /// (see the module docs) and must not act outside the transaction.
    pub(crate) async fn write<I, T, F>(
        &self,
        task: TaskId,
        input: I,
        write: F,
    ) -> Result<T, StoreError>
    where
        I: Send + Sync + 'static,
        T: Send + 'static,
        F: for<'c> Fn(&'c mut PgConnection, &'c I) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        self.write_on(self.route(task), task, input, write).await
    }

    /// [`Writers::write`] on writer `n`, for a job whose tasks all route there.
    pub(crate) async fn write_on<I, T, F>(
        &self,
        n: usize,
        task: TaskId,
        input: I,
        write: F,
    ) -> Result<T, StoreError>
    where
        I: Send + Sync + 'static,
        T: Send + 'static,
        F: for<'c> Fn(&'c mut PgConnection, &'c I) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        self.queue(n, task, |reply| {
            Write::Other(Box::new(Closure {
                pending: Queued::new(input, reply),
                write,
            }))
        })
        .await
    }

    /// Queues the write `make` builds around its reply channel on writer `n`
    /// and waits for its answer.
    async fn queue<T>(
        &self,
        n: usize,
        task: TaskId,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Write,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let queue = self.queues.get(n).ok_or(StoreError::Closed)?;
        queue
            .send((task.as_uuid().as_u128(), make(reply)))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// One writer task: its jobs come in batches, its connection from its pool.
struct Writer {
    pool: PgPool,
    max_batch: usize,
}

/// How long a writer keeps one connection before it hands it back to the
/// pool (which closes it once past its own lifetime) and takes another.
const HOLD: Duration = Duration::from_secs(300);

impl Writer {
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<Routed>, n: usize) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut held: Option<(PoolConnection<Postgres>, Instant)> = None;
        loop {
            let received = if held.is_some() {
                // A kept connection goes back as soon as the pool closes:
                // closing waits for every connection to come back.
                tokio::select! {
                    received = jobs.recv_many(&mut batch, self.max_batch) => received,
                    () = self.pool.close_event() => {
                        held = None;
                        continue;
                    }
                }
            } else {
                jobs.recv_many(&mut batch, self.max_batch).await
            };
            if received == 0 {
                break;
            }
            // Stable: one task's jobs keep their order.
            batch.sort_by_key(|(key, _)| *key);
            fuse(&mut batch);
            held = self.commit(&mut batch, held).await;
            if self.pool.is_closed() {
                held = None;
            }
        }
        tracing::debug!(writer = n, "PostgreSQL writer stopped");
    }

    /// Runs and commits one batch, answers every write, and gives back the
    /// connection to use for the next batch, if it is still good.
    ///
    /// The writer keeps its connection from batch to batch: taking one from
    /// the pool checks it with a round trip first, which a batch of a few
    /// writes would feel. A kept connection is not checked, so it may have
    /// died since (the server restarted, or an administrator cut it): when a
    /// batch's first statement fails on one as on a dead connection, the
    /// batch runs again, once, on a connection from the pool. A connection is
    /// also taken afresh after any failed batch (it may be broken or inside a
    /// transaction) and every [`HOLD`].
    async fn commit(
        &self,
        batch: &mut Vec<Routed>,
        held: Option<(PoolConnection<Postgres>, Instant)>,
    ) -> Option<(PoolConnection<Postgres>, Instant)> {
        let mut held = held;
        let (outcome, keep) = loop {
            let checked = held.is_none();
            let conn = match held.take() {
                Some(held) => Ok(held),
                None => self
                    .pool
                    .acquire()
                    .await
                    .map(|conn| (conn, Instant::now()))
                    .map_err(pg_error),
            };
            let (mut conn, since) = match conn {
                Ok(conn) => conn,
                Err(e) => break (Err(e), None),
            };
            match run_batch(&mut conn, batch).await {
                Ok(()) if since.elapsed() >= HOLD => break (Ok(()), None),
                Ok(()) => break (Ok(()), Some((conn, since))),
                Err(failure) => {
                    // It may be broken or inside a transaction: never reuse it.
                    conn.close_on_drop();
                    match failure {
                        Failure::DeadAtStart(e) if !checked => {
                            tracing::debug!(error = %e, "a kept PostgreSQL connection was dead; retrying on a new one");
                        }
                        Failure::DeadAtStart(e) | Failure::Broken(e) => break (Err(e), None),
                    }
                }
            }
        };
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, writes = batch.len(), "PostgreSQL batch not committed");
        }
        for (_, write) in batch.drain(..) {
            write.answer(outcome.clone());
        }
        keep
    }
}
