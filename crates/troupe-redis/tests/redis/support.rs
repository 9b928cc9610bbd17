//! Helpers: a bus under a fresh key prefix, raw Redis access, a private
//! `redis-server` to stop and start, and receiving with a deadline.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
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

/// A `redis-server` of the test's own on a free port, killed when dropped.
pub(crate) struct OwnRedis {
    pub(crate) port: u16,
    /// TLS settings (`--tls-port` and the certificates), if it speaks TLS.
    tls: Option<Vec<String>>,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts one, or `None` (the test should return) when there is no
    /// `redis-server` to run outside CI.
    pub(crate) async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, None).await
    }

    /// Starts one that speaks only TLS, with these certificate files
    /// (PEM); the client need not show a certificate.
    pub(crate) async fn start_tls(test: &str, cert: &str, key: &str, ca: &str) -> Option<Self> {
        let args = [
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--tls-ca-cert-file",
            ca,
            "--tls-auth-clients",
            "no",
        ];
        Self::start_with(test, Some(args.iter().map(|a| (*a).to_owned()).collect())).await
    }

    async fn start_with(test: &str, tls: Option<Vec<String>>) -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            port,
            tls,
            child: None,
        };
        if server.spawn().is_err() {
            skip(test, "cannot run redis-server (install redis-server)");
            return None;
        }
        server.wait_ready().await;
        Some(server)
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills it (as a crash would: no shutdown, nothing saved).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.spawn().unwrap();
        self.wait_ready().await;
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &port]),
            Some(tls) => command.args(["--port", "0", "--tls-port", &port]).args(tls),
        };
        let child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until it accepts connections.
    async fn wait_ready(&self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
