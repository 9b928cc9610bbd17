//! Helpers: a bus under a fresh key prefix, raw Redis access, and receiving
//! with a deadline. (A private `redis-server` to kill and restart is
//! `troupe_testkit::services::LocalRedis`.)

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::timeout;
use troupe_core::bus::{Delivery, Subscription};
use troupe_redis::{RedisBus, RedisBusConfig};

/// A test's Redis and key prefix; deletes the prefix's keys when the test passes.
pub(crate) struct Env {
    pub(crate) url: String,
    pub(crate) prefix: String,
}

impl Env {
    /// The Redis for `test` under a new prefix, or `None` to skip the test.
    pub(crate) async fn new(test: &str) -> Option<Self> {
        let url = troupe_testkit::services::redis_url(test).await?;
        Some(Self {
            url,
            prefix: format!("troupe-test:{}:", uuid::Uuid::new_v4().simple()),
        })
    }

    /// Settings with short timings: visibility 300 ms, 3 deliveries.
    pub(crate) fn config(&self) -> RedisBusConfig {
        RedisBusConfig {
            visibility_timeout: Duration::from_millis(300),
            max_deliveries: 3,
            key_prefix: self.prefix.clone(),
            ..RedisBusConfig::default()
        }
    }

    /// A bus with [`config`](Self::config).
    pub(crate) async fn bus(&self) -> RedisBus {
        self.bus_with(self.config()).await
    }

    /// A bus with `config`.
    pub(crate) async fn bus_with(&self, config: RedisBusConfig) -> RedisBus {
        RedisBus::connect(&self.url, config).await.unwrap()
    }

    /// A plain connection, to look at or tamper with the keys.
    pub(crate) async fn raw(&self) -> MultiplexedConnection {
        raw(&self.url).await
    }

    /// The stream key of `topic`.
    pub(crate) fn stream(&self, topic: &str) -> String {
        format!("{}stream:{topic}", self.prefix)
    }

    /// Deletes every key under the prefix.
    pub(crate) async fn cleanup(self) {
        let mut conn = self.raw().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// A plain connection to `url`.
pub(crate) async fn raw(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A fresh topic name.
pub(crate) fn topic(name: &str) -> String {
    format!("{name}.{}", uuid::Uuid::new_v4().simple())
}

/// The next delivery within `wait`, or a panic naming `what`.
pub(crate) async fn next_within(
    sub: &mut Box<dyn Subscription>,
    wait: Duration,
    what: &str,
) -> Delivery {
    match timeout(wait, sub.next()).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => panic!("{what}: receive failed: {e}"),
        Err(_) => panic!("{what}: nothing delivered within {wait:?}"),
    }
}

/// Asserts that nothing is delivered within `wait`.
pub(crate) async fn nothing_within(sub: &mut Box<dyn Subscription>, wait: Duration, what: &str) {
    if let Ok(got) = timeout(wait, sub.next()).await {
        panic!("{what}: expected nothing within {wait:?}, got {got:?}");
    }
}

/// Skips a test for want of a tool, or fails it in CI, where every tool
/// the tests need is installed.
pub(crate) fn skip(test: &str, why: &str) {
    let reason = format!("{test}: {why}");
    if troupe_testkit::services::in_ci() {
        panic!("{reason} (CI=true: a missing tool is a failure)");
    }
    eprintln!("skipped {reason}");
}
