//! The runtime's error type.

use troupe_core::bus::BusError;
use troupe_core::plan::PlanParserError;
use troupe_core::store::StoreError;

use crate::config::ConfigError;

/// What can go wrong when building or driving the runtime (not a task
/// failing: a failed task is a [`TaskRecord`](troupe_core::task::TaskRecord)
/// with status `failed` and its reason).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TroupeError {
    /// The configuration is out of bounds.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The runtime is missing a part or has conflicting ones.
    #[error("cannot build the runtime: {0}")]
    Setup(String),
    /// The goal cannot be accepted.
    #[error("invalid goal: {0}")]
    InvalidGoal(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A bug: something that should not happen did.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<PlanParserError> for TroupeError {
    fn from(e: PlanParserError) -> Self {
        TroupeError::Setup(e.to_string())
    }
}
