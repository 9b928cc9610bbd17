//! [`eventually`]: wait for a condition that another task or process makes
//! true, by looking again and again, with a bound that only a broken system
//! reaches. Tests use it instead of hand-written poll loops and sleeps: it
//! returns as soon as the condition holds, so a busy machine makes a test
//! slower, never wrong.

use std::future::Future;
use std::time::Duration;

/// How often the condition is looked at.
const EVERY: Duration = Duration::from_millis(20);

/// Looks at `check` until it gives `Some`, and returns that; panics naming
/// `what` if it has not after `within` (tokio time: paused time advances it).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let n = Arc::new(AtomicU32::new(0));
/// let counter = n.clone();
/// tokio::spawn(async move {
///     tokio::time::sleep(Duration::from_secs(3)).await;
///     counter.store(7, Ordering::SeqCst);
/// });
/// let seen = troupe_testkit::eventually("the counter is set", Duration::from_secs(10), || async {
///     let v = n.load(Ordering::SeqCst);
///     (v > 0).then_some(v)
/// })
/// .await;
/// assert_eq!(seen, 7);
/// # });
/// ```
#[allow(clippy::panic)] // a test helper: the panic is the test's failure
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not true within {within:?}: {what}");
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// [`eventually`] for tests without an async runtime (driving a child
/// process, say): looks at `check` until it gives `Some`, or panics after `within`.
pub fn eventually_blocking<T>(what: &str, within: Duration, check: impl FnMut() -> Option<T>) -> T {
    eventually_blocking_explained(what, within, check, String::new)
}

/// [`eventually_blocking`], with `explain` giving what the panic should
/// also say when time runs out (the logs of the processes involved, say).
#[allow(clippy::panic)] // a test helper: the panic is the test's failure
pub fn eventually_blocking_explained<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if std::time::Instant::now() >= deadline {
            panic!("not true within {within:?}: {what}\n{}", explain());
        }
        std::thread::sleep(EVERY);
    }
}
