//! Running one batch of a writer: fusing a subtask change with the progress
//! entry after it, cutting the batch into rounds, running it optimistically
//! and, when a write fails, again guarded by savepoints (see the parent
//! module's docs).

use sqlx::postgres::PgConnection;
use troupe_core::store::StoreError;

use super::queued::{Routed, Write};
use crate::postgres::coalesced;
use crate::postgres::fused::{self, FusedWrite};
use crate::postgres::pg_error;

/// Why a batch was not committed.
pub(super) enum Failure {
    /// Its first statement failed as on a dead connection, and so did the
    /// next: nothing of it ran, and it may run again on another connection.
    DeadAtStart(StoreError),
    /// The transaction broke later: nothing of it is committed, as far as
    /// this session can tell.
    Broken(StoreError),
}

/// Runs a batch (sorted by task) and commits it: optimistically first, then
/// guarded if a write failed.
pub(super) async fn run_batch(
    conn: &mut PgConnection,
    batch: &mut [Routed],
) -> Result<(), Failure> {
    let rounds = rounds(batch);
    let last = rounds.iter().copied().max().unwrap_or(0);
    if last == 0 && one_statement(batch) {
        // One statement is its own transaction.
        if run_round(conn, batch, &rounds, 0).await {
            return Ok(());
        }
        // A failed statement on a dead connection: unavailable, and so is the
        // next one. (The server could in principle have committed it and died
        // before answering; that is the ambiguity of any failed COMMIT.)
        let unavailable = batch
            .iter()
            .any(|(_, w)| matches!(w.error(), Some(StoreError::Unavailable(_))));
        if let Err(e) = exec(conn, "BEGIN").await {
            return Err(if unavailable {
                Failure::DeadAtStart(e)
            } else {
                Failure::Broken(e)
            });
        }
        return guarded(conn, batch).await.map_err(Failure::Broken);
    }
    exec(conn, "BEGIN").await.map_err(Failure::DeadAtStart)?;
    let mut ok = true;
    for round in 0..=last {
        if !run_round(conn, batch, &rounds, round).await {
            ok = false;
            break;
        }
    }
    if ok {
        return exec(conn, "COMMIT").await.map_err(Failure::Broken);
    }
    exec(conn, "ROLLBACK").await.map_err(Failure::Broken)?;
    exec(conn, "BEGIN").await.map_err(Failure::Broken)?;
    guarded(conn, batch).await.map_err(Failure::Broken)
}

/// Runs a batch *guarded*, in the transaction just begun: each write in its
/// own savepoint, so that a failed one is rolled back alone; then commits.
async fn guarded(conn: &mut PgConnection, batch: &mut [Routed]) -> Result<(), StoreError> {
    for (_, write) in batch.iter_mut() {
        exec(conn, "SAVEPOINT job").await?;
        if write.run_alone(conn).await {
            exec(conn, "RELEASE job").await?;
        } else {
            exec(conn, "ROLLBACK TO job").await?;
        }
    }
    exec(conn, "COMMIT").await
}

/// Fuses each subtask change that a progress entry of the same task follows
/// into a [`FusedWrite`], in a batch sorted by task (see `fused`).
pub(super) fn fuse(batch: &mut Vec<Routed>) {
    let fusable = batch
        .windows(2)
        .any(|pair| matches!(pair, [(a, Write::Subtask(_)), (b, Write::Append(_))] if a == b));
    if !fusable {
        return;
    }
    let mut fused: Vec<Routed> = Vec::with_capacity(batch.len());
    let mut writes = batch.drain(..).peekable();
    while let Some((key, write)) = writes.next() {
        let Write::Subtask(change) = write else {
            fused.push((key, write));
            continue;
        };
        let entry = writes.next_if(|(k, w)| *k == key && matches!(w, Write::Append(_)));
        match entry {
            Some((_, Write::Append(entry))) => {
                fused.push((key, Write::Fused(Box::new(FusedWrite { change, entry }))));
            }
            // `next_if` took an append or nothing; kept as it came all the same.
            Some(other) => {
                fused.push((key, Write::Subtask(change)));
                fused.push(other);
            }
            None => fused.push((key, Write::Subtask(change))),
        }
    }
    drop(writes);
    *batch = fused;
}

/// The round of each write of a batch sorted by task: a task's first write
/// is in round 0, its second in round 1, and so on.
fn rounds(batch: &[Routed]) -> Vec<usize> {
    let mut rounds = Vec::with_capacity(batch.len());
    let mut previous: Option<(u128, usize)> = None;
    for (key, _) in batch {
        let round = match previous {
            Some((k, r)) if k == *key => r + 1,
            _ => 0,
        };
        rounds.push(round);
        previous = Some((*key, round));
    }
    rounds
}

/// Whether a batch of one round is a single statement: writes of one coalesced kind.
fn one_statement(batch: &[Routed]) -> bool {
    let kind = |w: &Write| match w {
        Write::Append(_) => Some(0),
        Write::Subtask(_) => Some(1),
        Write::Task(_) => Some(2),
        Write::Fused(_) => Some(3),
        Write::Other(_) => None,
    };
    let mut kinds = batch.iter().map(|(_, w)| kind(w));
    match kinds.next() {
        Some(Some(first)) => kinds.all(|k| k == Some(first)),
        _ => false,
    }
}

/// Runs round `round` of a batch: one statement per coalesced kind, then the
/// other jobs one by one. False if any write failed.
async fn run_round(
    conn: &mut PgConnection,
    batch: &mut [Routed],
    rounds: &[usize],
    round: usize,
) -> bool {
    let mut appends = Vec::new();
    let mut subtasks = Vec::new();
    let mut tasks = Vec::new();
    let mut together = Vec::new();
    let mut others = Vec::new();
    for ((_, write), _) in batch.iter_mut().zip(rounds).filter(|(_, r)| **r == round) {
        match write {
            Write::Append(p) => appends.push(p),
            Write::Subtask(p) => subtasks.push(p),
            Write::Task(p) => tasks.push(p),
            Write::Fused(s) => together.push(&mut **s),
            Write::Other(job) => others.push(job),
        }
    }
    if !appends.is_empty() && !coalesced::append(conn, &mut appends).await {
        return false;
    }
    if !subtasks.is_empty() && !coalesced::update_subtasks(conn, &mut subtasks).await {
        return false;
    }
    if !tasks.is_empty() && !coalesced::update_tasks(conn, &mut tasks).await {
        return false;
    }
    if !together.is_empty() && !fused::write(conn, &mut together).await {
        return false;
    }
    for job in others {
        if !job.run(conn).await {
            return false;
        }
    }
    true
}

/// Runs one statement of transaction control.
async fn exec(conn: &mut PgConnection, sql: &'static str) -> Result<(), StoreError> {
    sqlx::raw_sql(sql)
        .execute(conn)
        .await
        .map(drop)
        .map_err(pg_error)
}
