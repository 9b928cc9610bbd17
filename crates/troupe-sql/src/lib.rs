//! # troupe-sql
//!
//! SQL stores for Troupe's task and progress ledgers.
//!
//! # Layout
//!
//! - [`SqliteStore`] ([`sqlite`]): the embedded default, one file, no server.
//! - [`migrations`]: the schema, one ordered list of SQL files per dialect
//!   (`migrations/<dialect>/`), applied at start.
//! - `codec`: column conversions shared by the dialects.
//!
//! The dialect seam is the store traits of `troupe-core` plus the per-dialect
//! migrations: a PostgreSQL store implements the same traits with its own SQL
//! and passes the same conformance suite.
//!
//! [`open_url`] turns a `--store` URL into a store.

mod codec;
pub mod migrations;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

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

/// Opens the stores a URL names: `memory`, or `sqlite://PATH`.
pub async fn open_url(url: &str) -> Result<Stores, StoreError> {
    if url == "memory" {
        return Ok(Stores::memory());
    }
    if let Some(path) = sqlite_path(url) {
        let store = SqliteStore::open(&path, SqliteOptions::default()).await?;
        return Ok(Stores::from_backend(Arc::new(store)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(StoreError::Backend(
            "PostgreSQL stores are not available in this build yet; use sqlite://PATH or memory"
                .into(),
        ));
    }
    Err(StoreError::Backend(format!(
        "unknown store URL {url:?}: use sqlite://PATH (default sqlite://troupe.db) or memory"
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
}
