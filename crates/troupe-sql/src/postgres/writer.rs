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
//! # Failures
//!
//! A batch first runs *optimistically*: the jobs one after another, with no
//! savepoints. Almost every batch succeeds as a whole, and a savepoint per job
//! would cost two more round trips each (`SAVEPOINT`, `RELEASE`) and one
//! subtransaction each: past 64 of them in one transaction PostgreSQL's
//! snapshot cache overflows, which slows every other session. When a job fails
//! (a duplicate id, a missing task, a lost lease), the batch is rolled back and
//! run again *guarded*: each job inside its own savepoint, a failed one rolled
//! back to it and answered with its error while the others go on. Jobs are
//! therefore closures that can run more than once; they have no effect outside
//! the transaction. (Measured on a 2-core machine, `troupe bench --llm mock`,
//! 2,000 tasks at concurrency 64: savepoints around every job gave 66 tasks/s,
//! this 114; the machine's CPU, not the log flush, is then the limit.)
//!
//! When the transaction itself breaks (the `COMMIT` fails, the connection is
//! lost, the server restarts), every job of the batch is answered with the
//! error, retryable [`StoreError::Unavailable`] where it is, and the writer's
//! connection is dropped so that the next batch gets a fresh one. A job whose
//! commit outcome is unknown may have been committed: the callers' retries are
//! keyed or guarded upstream, as they are for a single write.

use std::future::Future;
use std::pin::Pin;

use sqlx::postgres::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use troupe_core::TaskId;
use troupe_core::store::StoreError;

use super::pg_error;

/// A boxed future borrowing the connection for `'c`.
pub(crate) type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// A queued write, type-erased: run (possibly twice), then answer once.
trait Job: Send {
    /// Runs the write on `conn`; false if it failed (its error is kept for the answer).
    fn run<'c>(&'c mut self, conn: &'c mut PgConnection) -> BoxFuture<'c, bool>;
    /// The write's error, if its last run failed.
    fn error(&self) -> Option<StoreError>;
    /// Answers the caller: the write's outcome if `commit` is `Ok`, else `commit`'s error.
    fn answer(self: Box<Self>, commit: Result<(), StoreError>);
}

/// A write over `input`, its last outcome, and its caller's reply channel.
struct Pending<I, T, F> {
    input: I,
    write: F,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<I, T, F> Job for Pending<I, T, F>
where
    I: Send + Sync + 'static,
    T: Send + 'static,
    F: for<'c> Fn(&'c mut PgConnection, &'c I) -> BoxFuture<'c, Result<T, StoreError>>
        + Send
        + 'static,
{
    fn run<'c>(&'c mut self, conn: &'c mut PgConnection) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let outcome = (self.write)(conn, &self.input).await;
            let ok = outcome.is_ok();
            self.outcome = Some(outcome);
            ok
        })
    }

    fn error(&self) -> Option<StoreError> {
        match &self.outcome {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        }
    }

    fn answer(self: Box<Self>, commit: Result<(), StoreError>) {
        let outcome = match (commit, self.outcome) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(outcome)) => outcome,
            // Not run: only when the batch broke before it, so `commit` is an error.
            (Ok(()), None) => Err(StoreError::Backend("a write was not run".to_owned())),
        };
        // The caller may have gone away (its future dropped): nothing to tell then.
        let _ = self.reply.send(outcome);
    }
}

/// A job with the task whose writer runs it (the key batches are sorted by).
type Routed = (u128, Box<dyn Job>);

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
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            input,
            write,
            outcome: None,
            reply,
        });
        let queue = self.queues.get(n).ok_or(StoreError::Closed)?;
        queue
            .send((task.as_uuid().as_u128(), job))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// One writer task: its jobs come in batches, its connections from its pool.
struct Writer {
    pool: PgPool,
    max_batch: usize,
}

impl Writer {
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<Routed>, n: usize) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while jobs.recv_many(&mut batch, self.max_batch).await > 0 {
            // Stable: one task's jobs keep their order.
            batch.sort_by_key(|(key, _)| *key);
            let jobs: Vec<Box<dyn Job>> = batch.drain(..).map(|(_, job)| job).collect();
            self.commit(jobs).await;
        }
        tracing::debug!(writer = n, "PostgreSQL writer stopped");
    }

    /// Runs and commits one batch, and answers every job.
    ///
    /// The connection comes from the pool for each batch: the pool checks it
    /// first (so a batch after a server restart gets a live one), and keeps
    /// it no longer than its lifetime.
    async fn commit(&self, mut jobs: Vec<Box<dyn Job>>) {
        let outcome = match self.pool.acquire().await {
            Ok(mut conn) => {
                let outcome = run_batch(&mut conn, &mut jobs).await;
                if outcome.is_err() {
                    // It may be broken or inside a transaction: never reuse it.
                    conn.close_on_drop();
                }
                outcome
            }
            Err(e) => Err(pg_error(e)),
        };
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, jobs = jobs.len(), "PostgreSQL batch not committed");
        }
        for job in jobs {
            job.answer(outcome.clone());
        }
    }
}

/// Runs `jobs` in one transaction and commits it: optimistically first, then
/// guarded if a job failed. An error means the transaction broke (nothing of
/// it is committed, as far as this session can tell).
async fn run_batch(conn: &mut PgConnection, jobs: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
    exec(conn, "BEGIN").await?;
    let mut failed = false;
    for job in jobs.iter_mut() {
        if !job.run(conn).await {
            failed = true;
            break;
        }
    }
    if failed {
        exec(conn, "ROLLBACK").await?;
        exec(conn, "BEGIN").await?;
        for job in jobs.iter_mut() {
            exec(conn, "SAVEPOINT job").await?;
            if job.run(conn).await {
                exec(conn, "RELEASE job").await?;
            } else {
                exec(conn, "ROLLBACK TO job").await?;
                tracing::debug!(error = ?job.error(), "a write of a batch failed alone");
            }
        }
    }
    exec(conn, "COMMIT").await
}

/// Runs one statement of transaction control.
async fn exec(conn: &mut PgConnection, sql: &'static str) -> Result<(), StoreError> {
    sqlx::raw_sql(sql)
        .execute(conn)
        .await
        .map(drop)
        .map_err(pg_error)
}
