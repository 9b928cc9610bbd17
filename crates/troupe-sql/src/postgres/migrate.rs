//! Applying the PostgreSQL migrations.
//!
//! Several coordinators may start at once against a new database: the
//! migrations run in one transaction that first takes a transaction-scoped
//! advisory lock, so one applies them while the others wait and then find
//! nothing left to do. PostgreSQL's DDL is transactional: a failed migration
//! leaves the schema as it was.

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};
use troupe_core::store::StoreError;

use super::pg_error;
use crate::migrations::{POSTGRES, TABLE};

/// The advisory lock key that serializes migrations (any fixed number; this
/// is the first 8 bytes of "troupe:m" read as a big-endian integer).
const LOCK_KEY: i64 = 0x7472_6f75_7065_3a6d;

/// Applies every migration the database lacks; refuses a newer schema.
pub(super) async fn apply(conn: &mut PgConnection) -> Result<(), StoreError> {
    let fail = |e: sqlx::Error| match pg_error(e) {
        // Retryable as they are (a restart in the middle, say).
        StoreError::Unavailable(m) => StoreError::Unavailable(m),
        other => StoreError::Migration(other.to_string()),
    };
    let mut txn = conn.begin().await.map_err(fail)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *txn)
        .await
        .map_err(fail)?;
    // `TABLE` is our own constant, never input.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} \
         (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )))
    .execute(&mut *txn)
    .await
    .map_err(fail)?;
    let current: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COALESCE(MAX(version), 0) FROM {TABLE}"
    )))
    .fetch_one(&mut *txn)
    .await
    .map_err(fail)?;
    let latest = POSTGRES.last().map_or(0, |m| m.version);
    if current > latest {
        return Err(StoreError::Migration(format!(
            "the database schema is at version {current}, newer than this troupe knows ({latest}); use a newer troupe"
        )));
    }
    for m in POSTGRES.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(m.sql).execute(&mut *txn).await.map_err(|e| {
            StoreError::Migration(format!("migration {} ({}) failed: {e}", m.version, m.name))
        })?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {TABLE} (version, name) VALUES ($1, $2)"
        )))
        .bind(m.version)
        .bind(m.name)
        .execute(&mut *txn)
        .await
        .map_err(fail)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied PostgreSQL migration"
        );
    }
    txn.commit().await.map_err(fail)
}
