//! # troupe-sql
//!
//! SQL stores for Troupe's task and progress ledgers, task leases and checkpoints.
//!
//! # Layout
//!
//! - [`SqliteStore`] ([`sqlite`]): the embedded default, one file, no server.
//! - [`PostgresStore`] ([`postgres`]): a server shared by several coordinators
//!   and workers on several machines.
//! - [`migrations`]: the schema, one ordered list of SQL files per dialect
//!   (`migrations/<dialect>/`), applied at start.
//! - `codec`: column conversions shared by the dialects.
//!
//! The dialect seam is the store traits of `troupe-core` plus the per-dialect
//! migrations: each store implements the same traits with its own SQL and
//! passes the same conformance suite (`troupe-testkit`).
//!
//! [`open_url`] turns a `--store` URL into a store.

mod codec;
pub mod migrations;
pub mod postgres;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};
use troupe_core::store::{StoreError, Stores};

/// The file a `sqlite://PATH` (or `sqlite:PATH`) URL names, if it is one.
///
/// `sqlite://troupe.db` is relative to the working directory; `sqlite:///var/lib/troupe.db` is absolute.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let rest = rest.split('?').next().unwrap_or(rest);
    (!rest.is_empty()).then(|| PathBuf::from(rest))
}

/// Whether a URL names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A `scheme://user:password@host/...` URL (a store's, a bus's) with the
/// password replaced by `***`, for messages.
///
/// ```
/// assert_eq!(
///     troupe_sql::redact_url("redis://me:s3cret@cache:6379/0"),
///     "redis://me:***@cache:6379/0"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

/// Opens the stores a URL names: `memory`, `sqlite://PATH`, or
/// `postgres://...` (also `postgresql://...`, with the default [`PostgresOptions`]).
pub async fn open_url(url: &str) -> Result<Stores, StoreError> {
    open_url_with(url, PostgresOptions::default()).await
}

/// [`open_url`], with `postgres` as the options of a PostgreSQL store.
pub async fn open_url_with(url: &str, postgres: PostgresOptions) -> Result<Stores, StoreError> {
    if url == "memory" {
        return Ok(Stores::memory());
    }
    if let Some(path) = sqlite_path(url) {
        let store = SqliteStore::open(&path, SqliteOptions::default()).await?;
        return Ok(Stores::from_backend(Arc::new(store)));
    }
    if is_postgres_url(url) {
        let store = PostgresStore::connect(url, postgres).await?;
        return Ok(Stores::from_backend(Arc::new(store)));
    }
    Err(StoreError::Backend(format!(
        "unknown store URL {:?}: use sqlite://PATH (default sqlite://troupe.db), postgres://... or memory",
        redact_url(url)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_files() {
        assert_eq!(
            sqlite_path("sqlite://troupe.db"),
            Some(PathBuf::from("troupe.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///tmp/x.db"),
            Some(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:x.db?mode=rwc"),
            Some(PathBuf::from("x.db"))
        );
        assert_eq!(sqlite_path("sqlite://"), None);
        assert_eq!(sqlite_path("postgres://x"), None);
    }

    #[test]
    fn postgres_urls_are_recognised_and_redacted() {
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("postgresql://h/db"));
        assert!(!is_postgres_url("sqlite://x.db"));
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("mysql://h"), "mysql://h");
    }
}
