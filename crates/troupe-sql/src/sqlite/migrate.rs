//! Applying the SQLite migrations.

use rusqlite::{Connection, TransactionBehavior, params};
use troupe_core::store::StoreError;

use crate::migrations::{SQLITE, TABLE};

/// Applies every migration the database lacks, in one transaction.
pub(super) fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| StoreError::Migration(e.to_string());
    let txn = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    txn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
    ))
    .map_err(fail)?;
    let current: i64 = txn
        .query_row(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {TABLE}"),
            [],
            |r| r.get(0),
        )
        .map_err(fail)?;
    let latest = SQLITE.last().map_or(0, |m| m.version);
    if current > latest {
        return Err(StoreError::Migration(format!(
            "the database schema is at version {current}, newer than this troupe knows ({latest}); use a newer troupe"
        )));
    }
    for m in SQLITE.iter().filter(|m| m.version > current) {
        txn.execute_batch(m.sql).map_err(|e| {
            StoreError::Migration(format!("migration {} ({}) failed: {e}", m.version, m.name))
        })?;
        txn.execute(
            &format!("INSERT INTO {TABLE} (version, name, applied_at) VALUES (?1, ?2, ?3)"),
            params![
                m.version,
                m.name,
                troupe_core::time::now().timestamp_millis()
            ],
        )
        .map_err(fail)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied SQLite migration"
        );
    }
    txn.commit().map_err(fail)
}
