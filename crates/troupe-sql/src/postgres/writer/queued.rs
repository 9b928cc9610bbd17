//! What a writer queues: a [`Write`], either data that `coalesced` (or
//! `fused`) writes for many tasks in one statement, or a type-erased
//! [`Closure`] run alone; each holds its last outcome and its caller's reply
//! channel, and is answered once, after its batch's commit.

use std::future::Future;
use std::pin::Pin;

use sqlx::postgres::PgConnection;
use tokio::sync::oneshot;
use troupe_core::ledger::{Applied, NewProgressEntry, ProgressEntry};
use troupe_core::store::StoreError;

use crate::postgres::coalesced::{self, SubtaskWrite, TaskWrite};
use crate::postgres::fused::FusedWrite;

/// A boxed future borrowing the connection for `'c`.
pub(crate) type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// A queued write given as data: its input, its last outcome, and its caller's reply channel.
#[derive(Debug)]
pub(crate) struct Queued<I, T> {
    pub(crate) input: I,
    pub(crate) outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<I, T> Queued<I, T> {
    pub(super) fn new(input: I, reply: oneshot::Sender<Result<T, StoreError>>) -> Self {
        Self {
            input,
            outcome: None,
            reply,
        }
    }

    /// Whether the last run gave no error.
    pub(crate) fn ok(&self) -> bool {
        matches!(self.outcome, Some(Ok(_)))
    }

    /// The error of the last run, if it failed.
    fn error(&self) -> Option<&StoreError> {
        self.outcome.as_ref().and_then(|o| o.as_ref().err())
    }

    /// The error of the last run, for a write that did not succeed (one not
    /// run gets an error saying so).
    pub(crate) fn failure(&self) -> StoreError {
        self.error()
            .cloned()
            .unwrap_or_else(|| StoreError::Backend("a write was not run".to_owned()))
    }

    /// Answers the caller: the write's outcome if `commit` is `Ok`, else `commit`'s error.
    pub(super) fn answer(self, commit: Result<(), StoreError>) {
        // The caller may have gone away (its future dropped): nothing to tell then.
        let _ = self.reply.send(settle(commit, self.outcome));
    }
}

/// What a caller is told: the commit's error, or else the write's own outcome.
fn settle<T>(
    commit: Result<(), StoreError>,
    outcome: Option<Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match (commit, outcome) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(outcome)) => outcome,
        // Not run: only when the batch broke before it, so `commit` is an error.
        (Ok(()), None) => Err(StoreError::Backend("a write was not run".to_owned())),
    }
}

/// A queued write given as a closure, type-erased: run (possibly twice), then answer once.
pub(super) trait Job: Send {
    /// Runs the write on `conn`; false if it failed (its error is kept for the answer).
    fn run<'c>(&'c mut self, conn: &'c mut PgConnection) -> BoxFuture<'c, bool>;
    /// Answers the caller: the write's outcome if `commit` is `Ok`, else `commit`'s error.
    fn answer(self: Box<Self>, commit: Result<(), StoreError>);
}

/// A write over `input` by a closure, with its last outcome and its caller's reply channel.
pub(super) struct Closure<I, T, F> {
    pub(super) pending: Queued<I, T>,
    pub(super) write: F,
}

impl<I, T, F> Job for Closure<I, T, F>
where
    I: Send + Sync + 'static,
    T: Send + 'static,
    F: for<'c> Fn(&'c mut PgConnection, &'c I) -> BoxFuture<'c, Result<T, StoreError>>
        + Send
        + 'static,
{
    fn run<'c>(&'c mut self, conn: &'c mut PgConnection) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let outcome = (self.write)(conn, &self.pending.input).await;
            if let Err(e) = &outcome {
                tracing::debug!(error = %e, "a PostgreSQL write failed");
            }
            self.pending.outcome = Some(outcome);
            self.pending.ok()
        })
    }

    fn answer(self: Box<Self>, commit: Result<(), StoreError>) {
        self.pending.answer(commit);
    }
}

/// One queued write.
// Appends are most of the writes and the largest variant: boxing them would
// allocate once per append to save memory on the rarer variants.
#[allow(clippy::large_enum_variant)]
pub(super) enum Write {
    Append(Queued<NewProgressEntry, ProgressEntry>),
    Subtask(Queued<SubtaskWrite, Applied>),
    Task(Queued<TaskWrite, Applied>),
    /// A subtask change fused with the progress entry queued after it (see `fused`).
    Fused(Box<FusedWrite>),
    Other(Box<dyn Job>),
}

impl Write {
    /// Runs this write alone; false if it failed.
    pub(super) async fn run_alone(&mut self, conn: &mut PgConnection) -> bool {
        match self {
            Write::Append(p) => coalesced::append(conn, &mut [p]).await && p.ok(),
            Write::Subtask(p) => coalesced::update_subtasks(conn, &mut [p]).await && p.ok(),
            Write::Task(p) => coalesced::update_tasks(conn, &mut [p]).await && p.ok(),
            Write::Fused(s) => s.run_alone(conn).await,
            Write::Other(job) => job.run(conn).await,
        }
    }

    /// The error of this write's last run, if it failed.
    pub(super) fn error(&self) -> Option<&StoreError> {
        match self {
            Write::Append(p) => p.error(),
            Write::Subtask(p) => p.error(),
            Write::Task(p) => p.error(),
            Write::Fused(s) => s.change.error().or_else(|| s.entry.error()),
            Write::Other(_) => None,
        }
    }

    pub(super) fn answer(self, commit: Result<(), StoreError>) {
        match self {
            Write::Append(p) => p.answer(commit),
            Write::Subtask(p) => p.answer(commit),
            Write::Task(p) => p.answer(commit),
            Write::Fused(s) => {
                let FusedWrite { change, entry } = *s;
                change.answer(commit.clone());
                entry.answer(commit);
            }
            Write::Other(job) => job.answer(commit),
        }
    }
}

/// A write with the task whose writer runs it (the key batches are sorted by).
pub(super) type Routed = (u128, Write);
