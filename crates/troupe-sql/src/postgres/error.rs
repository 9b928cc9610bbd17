//! Classifying PostgreSQL errors: what is worth a retry, what is a conflict.

use troupe_core::store::StoreError;

/// SQLSTATE `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

/// SQLSTATEs after which the same call may succeed: the server is going away
/// or starting (`57P01` admin_shutdown, `57P02` crash_shutdown, `57P03`
/// cannot_connect_now), a connection broke (class `08`), the transaction lost
/// a race (`40001` serialization_failure, `40P01` deadlock_detected), the
/// server is short of resources (class `53`), a lock or a statement timed out
/// (`55P03`, `57014`), or it is a read-only standby (`25006`, during a failover).
fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03" | "57014" | "25006"
        )
}

/// Maps an error of the driver to a [`StoreError`]. A unique violation comes
/// out as [`StoreError::Backend`]: the caller, which knows the task, turns it
/// into `Conflict` first (see [`is_unique_violation`]).
pub(crate) fn pg_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolClosed => StoreError::Closed,
        e @ (sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed) => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) if db.code().is_some_and(|c| is_transient(&c)) => {
            StoreError::Unavailable(db.to_string())
        }
        e @ (sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }) => StoreError::Corrupt(e.to_string()),
        e => StoreError::Backend(e.to_string()),
    }
}

/// Whether `e` is the database refusing a duplicate key.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    code_of(e).as_deref() == Some(UNIQUE_VIOLATION)
}

/// The SQLSTATE of a database error.
fn code_of(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::is_transient;

    #[test]
    fn shutdowns_and_lost_races_are_transient() {
        for code in ["57P01", "57P03", "08006", "40001", "40P01", "53300"] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "42P01", "22001", "28P01", "3D000"] {
            assert!(!is_transient(code), "{code}");
        }
    }
}
