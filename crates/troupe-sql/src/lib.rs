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

//!
//! # Features
//!
//! `sqlite` and `postgres` (both on by default) each build one store; a
//! program that needs only one leaves the other's driver out.

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod codec;
pub mod migrations;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::path::PathBuf;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use std::sync::Arc;

#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};
pub use troupe_core::redact_url;
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

/// How [`open_url_with`] opens what a URL names; the defaults otherwise.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// For `sqlite://` URLs.
    #[cfg(feature = "sqlite")]
    pub sqlite: SqliteOptions,
    /// For `postgres://` URLs.
    #[cfg(feature = "postgres")]
    pub postgres: PostgresOptions,
}

/// Opens the stores a URL names: `memory`, `sqlite://PATH`, or
/// `postgres://...` (also `postgresql://...`), with the default options.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let stores = troupe_sql::open_url("memory").await.unwrap();
/// assert!(stores.tasks.get_task(troupe_core::TaskId::new()).await.unwrap().is_none());
/// let err = troupe_sql::open_url("mysql://u:pw@db/x").await.unwrap_err();
/// assert!(err.to_string().contains("mysql://u:***@db/x"));
/// # });
/// ```
pub async fn open_url(url: &str) -> Result<Stores, StoreError> {
    open_url_with(url, OpenOptions::default()).await
}

/// [`open_url`], with `options` for the store it opens.
pub async fn open_url_with(url: &str, options: OpenOptions) -> Result<Stores, StoreError> {
    let _ = &options;
    if url == "memory" {
        return Ok(Stores::memory());
    }
    if let Some(path) = sqlite_path(url) {
        #[cfg(feature = "sqlite")]
        {
            let store = SqliteStore::open(&path, options.sqlite).await?;
            return Ok(Stores::from_backend(Arc::new(store)));
        }
        #[cfg(not(feature = "sqlite"))]
        return Err(missing_feature(url, "sqlite", &path.display().to_string()));
    }
    if is_postgres_url(url) {
        #[cfg(feature = "postgres")]
        {
            let store = PostgresStore::connect(url, options.postgres).await?;
            return Ok(Stores::from_backend(Arc::new(store)));
        }
        #[cfg(not(feature = "postgres"))]
        return Err(missing_feature(url, "postgres", "a PostgreSQL database"));
    }
    Err(StoreError::Backend(format!(
        "unknown store URL {:?}: use sqlite://PATH (default sqlite://troupe.db), postgres://... or memory",
        redact_url(url)
    )))
}

/// The error for a URL whose store this build leaves out.
#[cfg(not(all(feature = "sqlite", feature = "postgres")))]
fn missing_feature(url: &str, feature: &str, what: &str) -> StoreError {
    StoreError::Backend(format!(
        "{} names {what}, but troupe-sql was built without its {feature:?} feature",
        redact_url(url)
    ))
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
    }
}
