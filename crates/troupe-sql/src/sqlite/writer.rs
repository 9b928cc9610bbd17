//! The writer thread: every write to one SQLite file goes through it.
//!
//! SQLite allows one writer at a time, and a commit is its costly part. So one
//! thread owns the write connection and does group commit: it takes every job
//! waiting in its queue (up to [`MAX_BATCH`]), runs each inside its own
//! savepoint in one transaction, commits once, and only then answers each
//! caller. A caller's future therefore resolves after its write is committed;
//! a job that fails rolls back to its savepoint without disturbing the others.
//! The transaction and savepoint statements are prepared once and reused (a
//! write costs no SQL parsing beyond its own statements).

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use troupe_core::store::StoreError;

use super::sql_error;

/// The most jobs committed together.
const MAX_BATCH: usize = 512;

/// Called with the outcome of the commit, after it.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A write: runs on the connection (or learns that the transaction could not
/// start), says whether it succeeded, and returns what to do after the commit.
type Job = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> (bool, Finish) + Send>;

/// Called on the writer thread when a batch could not be committed, so that
/// state kept beside the database (the step cache) can be dropped.
pub(crate) type OnRollback = Box<dyn Fn() + Send>;

/// A handle to the writer thread.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`; it ends when every handle is dropped.
    pub(crate) fn spawn(
        conn: Connection,
        name: String,
        on_rollback: OnRollback,
    ) -> Result<(Self, std::thread::JoinHandle<()>), StoreError> {
        let (jobs, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&conn, rx, &on_rollback))
            .map_err(|e| {
                StoreError::Backend(format!("cannot start the SQLite writer thread: {e}"))
            })?;
        Ok((Self { jobs }, thread))
    }

    /// Runs `f` in the next batch and returns its value once the batch is committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let outcome = match conn {
                Ok(conn) => f(conn),
                Err(e) => Err(e.clone()),
            };
            let ok = outcome.is_ok();
            let finish: Finish = Box::new(move |commit| {
                // The caller may have gone away (its future dropped); nothing to tell then.
                let _ = reply.send(commit.and(outcome));
            });
            (ok, finish)
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

fn run(conn: &Connection, mut rx: mpsc::UnboundedReceiver<Job>, on_rollback: &OnRollback) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if !commit_batch(conn, batch) {
            on_rollback();
        }
    }
    tracing::debug!("SQLite writer thread stopped");
}

/// Runs one cached statement that takes no parameters and returns no rows.
fn exec(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(drop)
        .map_err(|e| sql_error(&e))
}

/// Runs a batch in one transaction; false if it was not committed.
fn commit_batch(conn: &Connection, batch: Vec<Job>) -> bool {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        for job in batch {
            let (_, finish) = job(Err(&e));
            finish(Err(e.clone()));
        }
        return false;
    }
    let mut finishes: Vec<(Result<(), StoreError>, Finish)> = Vec::with_capacity(batch.len());
    for job in batch {
        if let Err(e) = exec(conn, "SAVEPOINT job") {
            let (_, finish) = job(Err(&e));
            finishes.push((Err(e), finish));
            continue;
        }
        let (ok, finish) = job(Ok(conn));
        let released = if ok {
            exec(conn, "RELEASE job")
        } else {
            exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
        };
        finishes.push((released, finish));
    }
    let committed = exec(conn, "COMMIT");
    if let Err(e) = &committed {
        tracing::error!(error = %e, jobs = finishes.len(), "SQLite commit failed; the batch is lost");
        if let Err(e) = exec(conn, "ROLLBACK") {
            tracing::error!(error = %e, "SQLite rollback after a failed commit failed");
        }
    }
    let ok = committed.is_ok();
    for (released, finish) in finishes {
        finish(committed.clone().and(released));
    }
    ok
}
