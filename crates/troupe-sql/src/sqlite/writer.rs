//! The writer thread: every write to one SQLite file goes through it.
//!
//! SQLite allows one writer at a time, and a commit is its costly part. So one
//! thread owns the write connection and does group commit: it takes every job
//! waiting in its queue (up to [`MAX_BATCH`]), runs each inside its own
//! savepoint in one transaction, commits once, and only then answers each
//! caller. A caller's future therefore resolves after its write is committed;
//! a job that fails rolls back to its savepoint without disturbing the others.

use rusqlite::{Connection, TransactionBehavior};
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

/// A handle to the writer thread.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`; it ends when every handle is dropped.
    pub(crate) fn spawn(conn: Connection, name: String) -> Result<(Self, std::thread::JoinHandle<()>), StoreError> {
        let (jobs, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the SQLite writer thread: {e}")))?;
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

fn run(mut conn: Connection, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, batch);
    }
    tracing::debug!("SQLite writer thread stopped");
}

fn commit_batch(conn: &mut Connection, batch: Vec<Job>) {
    let mut finishes: Vec<(Result<(), StoreError>, Finish)> = Vec::with_capacity(batch.len());
    let mut txn = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(txn) => txn,
        Err(e) => {
            let e = sql_error(&e);
            for job in batch {
                let (_, finish) = job(Err(&e));
                finish(Err(e.clone()));
            }
            return;
        }
    };
    for job in batch {
        match txn.savepoint() {
            Ok(sp) => {
                let (ok, finish) = job(Ok(&sp));
                let released = if ok { sp.commit().map_err(|e| sql_error(&e)) } else { Ok(()) };
                // A failed job's savepoint rolls back when `sp` is dropped.
                finishes.push((released, finish));
            }
            Err(e) => {
                let e = sql_error(&e);
                let (_, finish) = job(Err(&e));
                finishes.push((Err(e), finish));
            }
        }
    }
    let committed = txn.commit().map_err(|e| sql_error(&e));
    if let Err(e) = &committed {
        tracing::error!(error = %e, jobs = finishes.len(), "SQLite commit failed; the batch is lost");
    }
    for (released, finish) in finishes {
        finish(committed.clone().and(released));
    }
}
