//! A subtask change and the progress entry that tells of it, as one statement.
//!
//! The orchestrator sends a subtask's change (dispatched, started, completed,
//! failed) and its progress entry to the store at once. When the two reach a
//! writer in one batch, one after the other, the writer fuses them into a
//! [`FusedWrite`]: one statement applies the guarded change and appends the entry,
//! for every fused write of its round (see `writer`). A batch of fused writes alone is then
//! one statement, one round trip and one commit, where the two writes took
//! two statements, or four round trips inside `BEGIN` and `COMMIT`.
//!
//! Fusing changes nothing a caller can see: the entry is appended whether or
//! not the change applied, as two separate writes would do, and each caller
//! gets the answer its own write would have got.

use std::sync::LazyLock;

use sqlx::postgres::PgConnection;
use sqlx::types::Uuid;
use troupe_core::ledger::{Applied, NewProgressEntry, ProgressEntry};

use super::coalesced::{
    self, AppendColumns, SUBTASK_UPDATE, SubtaskColumns, SubtaskWrite, append_ctes, failed,
    settle_appends, settle_subtasks,
};
use super::pg_error;
use super::writer::Queued;

/// A subtask change and the progress entry queued right after it for the same task.
#[derive(Debug)]
pub(crate) struct FusedWrite {
    pub(crate) change: Queued<SubtaskWrite, Applied>,
    pub(crate) entry: Queued<NewProgressEntry, ProgressEntry>,
}

impl FusedWrite {
    /// Runs this fused write alone, as two writes; false if one failed. Both are
    /// then rolled back together (they share the caller's savepoint), so
    /// both are answered with the error.
    pub(crate) async fn run_alone(&mut self, conn: &mut PgConnection) -> bool {
        if !(coalesced::update_subtasks(conn, &mut [&mut self.change]).await && self.change.ok()) {
            self.entry.outcome = Some(Err(self.change.failure()));
            return false;
        }
        if !(coalesced::append(conn, &mut [&mut self.entry]).await && self.entry.ok()) {
            self.change.outcome = Some(Err(self.entry.failure()));
            return false;
        }
        true
    }
}

/// The change's time and arrays from `$1` on (as in `SUBTASK_UPDATE`), the
/// entry's from `$12`; one row per changed subtask (part 0) and per appended entry
/// (part 1, with its step).
static FUSED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH ch AS ({SUBTASK_UPDATE}), {} \
         SELECT 0 AS part, task_id, 0::bigint AS step FROM ch \
         UNION ALL SELECT 1, task_id, step FROM ins",
        append_ctes(12)
    )
});

/// Writes fused writes, at most one per task, in one statement. False if it failed.
pub(crate) async fn write(conn: &mut PgConnection, fused: &mut [&mut FusedWrite]) -> bool {
    let (mut changes, mut entries): (Vec<_>, Vec<_>) = fused
        .iter_mut()
        .map(|s| {
            let FusedWrite { change, entry } = &mut **s;
            (change, entry)
        })
        .unzip();
    let rows = {
        let sc = SubtaskColumns::of(changes.iter().map(|w| &w.input));
        let ac = AppendColumns::of(entries.iter().map(|w| &w.input));
        ac.bind(sc.bind(sqlx::query_as::<_, (i32, Uuid, i64)>(FUSED_SQL.as_str())))
            .fetch_all(&mut *conn)
            .await
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            let e = pg_error(e);
            failed(&mut entries, &e);
            return failed(&mut changes, &e);
        }
    };
    let mut changed = Vec::new();
    let mut appended = Vec::new();
    for (part, task, step) in rows {
        if part == 0 {
            changed.push(task);
        } else {
            appended.push((task, step));
        }
    }
    settle_appends(conn, &mut entries, Ok(appended)).await
        && settle_subtasks(conn, &mut changes, Ok(changed)).await
}
