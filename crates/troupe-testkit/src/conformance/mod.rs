//! Conformance suites: every implementation of a seam runs the same checks.
//!
//! Each check asserts what a user of the seam relies on, makes its own topics
//! or tasks with fresh ids (so a shared Redis or PostgreSQL can be used), and
//! panics with the check's name when the implementation falls short.
//!
//! The macros [`store_conformance!`](crate::store_conformance),
//! [`bus_conformance!`](crate::bus_conformance) and
//! [`llm_conformance!`](crate::llm_conformance) expand to one test per check,
//! so that a failing check names itself and hides none of the others. Each
//! test gets a fresh [`Fixture`] from a function you give, which may skip the
//! test (return `None`) when a service is missing.

pub mod bus;
pub mod llm;
pub mod store;

use std::future::Future;
use std::pin::Pin;

/// What one conformance check runs on, and how it is cleaned up after the
/// check passed (a failed check leaves it, for a look).
pub struct Fixture<T> {
    /// The implementation under test.
    pub subject: T,
    cleanup: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<T> std::fmt::Debug for Fixture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").finish_non_exhaustive()
    }
}

impl<T> Fixture<T> {
    /// A fixture with nothing to clean up.
    pub fn new(subject: T) -> Self {
        Self {
            subject,
            cleanup: None,
        }
    }

    /// A fixture whose `cleanup` runs after the check passed (dropping a
    /// scratch database, deleting keys, closing a pool).
    pub fn with_cleanup(subject: T, cleanup: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            subject,
            cleanup: Some(Box::pin(cleanup)),
        }
    }

    /// Runs the cleanup.
    pub async fn finish(self) {
        if let Some(cleanup) = self.cleanup {
            cleanup.await;
        }
    }
}

/// One test per check: with `(suite, argument)` from `$parts` on the
/// fixture that `$make(check name)` gives, runs `suite.check(argument)`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($make:path, |$fixture:ident| $parts:expr; $($check:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some($fixture) = $make(stringify!($check)).await else {
                    return;
                };
                let (suite, argument) = $parts;
                suite.$check(argument).await;
                $fixture.finish().await;
            }
        )*
    };
}
