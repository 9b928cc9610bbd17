//! How a Redis error becomes a [`BusError`] that says what to do next.
//!
//! Anything that a later attempt may get past (the connection, a timeout, a
//! server loading its data set, a busy script, a failover, memory full) is
//! [`BusError::Unavailable`], which is retryable; errors that will repeat
//! (wrong key type, refused credentials or permissions, a reply this crate
//! cannot read) are [`BusError::Invalid`]. A missing consumer group
//! (`NOGROUP`) is not an error to pass on: the caller recreates the group.

use redis::{ErrorKind, RedisError, ServerErrorKind};
use troupe_core::bus::BusError;

/// Server error codes (outside redis-rs's known kinds) that pass with time.
const TRANSIENT_CODES: &[&str] = &[
    "BUSY",
    "OOM",
    "MISCONF",
    "NOREPLICAS",
    "LOADING",
    "MASTERDOWN",
    "TRYAGAIN",
];

/// The [`BusError`] for a failed Redis command.
pub(crate) fn bus_error(err: &RedisError) -> BusError {
    if is_transient(err) {
        BusError::Unavailable(format!("Redis: {err}"))
    } else if err.kind() == ErrorKind::AuthenticationFailed {
        BusError::Invalid(format!("Redis refused the credentials: {err}"))
    } else {
        BusError::Invalid(format!("Redis: {err}"))
    }
}

/// Whether the same command may succeed later.
fn is_transient(err: &RedisError) -> bool {
    match err.kind() {
        ErrorKind::Io | ErrorKind::Parse => true,
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        ) => true,
        _ => err
            .code()
            .is_some_and(|code| TRANSIENT_CODES.contains(&code)),
    }
}

/// Whether `err` says the stream or its consumer group does not exist (as
/// after a Redis restart without persistence, or the stream's deletion).
pub(crate) fn is_no_group(err: &RedisError) -> bool {
    err.code() == Some("NOGROUP")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some("detail".to_owned()))
    }

    #[test]
    fn transient_errors_are_retryable() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(bus_error(&refused).is_retryable());
        assert!(bus_error(&server("BUSY")).is_retryable());
        assert!(bus_error(&server("OOM")).is_retryable());
    }

    #[test]
    fn lasting_errors_are_not() {
        assert!(!bus_error(&server("WRONGTYPE")).is_retryable());
        assert!(!bus_error(&server("NOPERM")).is_retryable());
        assert!(is_no_group(&server("NOGROUP")));
        assert!(!is_no_group(&server("WRONGTYPE")));
    }
}
