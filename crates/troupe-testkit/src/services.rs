//! The local services tests need (Redis, PostgreSQL), found or refused.
//!
//! A test that needs a service asks for its URL here. The URL comes from an
//! environment variable (`TROUPE_TEST_REDIS_URL`, `TROUPE_TEST_POSTGRES_URL`),
//! else the standard local address; the service is probed with a TCP connect.
//! When it does not answer, the test is skipped with a printed reason, except
//! in CI (`CI` set to anything but `false`/`0`), where a missing service is a
//! failure: CI's scripts (`scripts/services.sh`) start what it needs.
//!
//! A test that kills or restarts a server starts its own instead:
//! [`LocalRedis`] and [`LocalPostgres`] run on a free port, in a scratch
//! directory, and are stopped when dropped.
//!
//! ```no_run
//! # async fn demo() {
//! let Some(url) = troupe_testkit::services::redis_url("my_test").await else {
//!     return; // skipped, with the reason printed
//! };
//! # let _ = url;
//! # }
//! ```

// A test helper: refusing to run in CI is meant to panic.
#![allow(clippy::panic, clippy::print_stderr)]

use std::time::Duration;

/// The default Redis a test uses.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The default PostgreSQL a test uses (the `test` database, trust auth).
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Whether this run is CI's, where a missing service fails the test.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The Redis URL for `test`, or `None` (the test should return) when no
/// Redis answers outside CI. Panics in CI when none answers.
pub async fn redis_url(test: &str) -> Option<String> {
    service_url(
        test,
        "Redis",
        "TROUPE_TEST_REDIS_URL",
        DEFAULT_REDIS_URL,
        6379,
    )
    .await
}

/// The PostgreSQL URL for `test`, or `None` (the test should return) when no
/// PostgreSQL answers outside CI. Panics in CI when none answers.
pub async fn postgres_url(test: &str) -> Option<String> {
    service_url(
        test,
        "PostgreSQL",
        "TROUPE_TEST_POSTGRES_URL",
        DEFAULT_POSTGRES_URL,
        5432,
    )
    .await
}

async fn service_url(
    test: &str,
    service: &str,
    var: &str,
    default: &str,
    default_port: u16,
) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let addr = host_port(&url, default_port);
    let reachable = matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&addr)
        )
        .await,
        Ok(Ok(_))
    );
    if reachable {
        return Some(url);
    }
    let reason = format!(
        "{test}: no {service} at {addr} ({var} or {default}); run scripts/services.sh to start one"
    );
    if in_ci() {
        panic!("{reason} (CI=true: a missing service is a failure)");
    }
    eprintln!("skipped {reason}");
    None
}

/// `host:port` of a `scheme://[user[:pass]@]host[:port][/...]` URL.
fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn finds_host_and_port() {
        assert_eq!(host_port("redis://127.0.0.1:6379", 1), "127.0.0.1:6379");
        assert_eq!(host_port("redis://127.0.0.1", 6379), "127.0.0.1:6379");
        assert_eq!(
            host_port(
                "postgres://postgres:pw@db.local:5433/test?sslmode=disable",
                5432
            ),
            "db.local:5433"
        );
        assert_eq!(host_port("postgres://u@h/db", 5432), "h:5432");
    }
}

/// A Redis server of a test's own, on a free port, that the test may kill
/// and restart (a chaos test never touches the shared one). It keeps
/// nothing on disk, as the shared one: a restart loses every stream.
#[derive(Debug)]
pub struct LocalRedis {
    port: u16,
    dir: std::path::PathBuf,
    /// The TLS arguments (certificates), if it speaks only TLS.
    tls: Option<Vec<String>>,
    child: std::sync::Mutex<Option<std::process::Child>>,
}

impl LocalRedis {
    /// Starts one, or `None` (the test should return) when `redis-server`
    /// is not installed outside CI. Panics in CI when it is missing.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with(test, None)
    }

    /// Like [`start`](Self::start), for one that speaks only TLS with these
    /// certificate files (PEM); clients need not show a certificate.
    pub fn start_tls(test: &str, cert: &str, key: &str, ca: &str) -> Option<Self> {
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
        Self::start_with(test, Some(args.iter().map(|a| (*a).to_owned()).collect()))
    }

    fn start_with(test: &str, tls: Option<Vec<String>>) -> Option<Self> {
        if !installed("redis-server", &["--version"]) {
            skip_or_fail(test, "redis-server is not installed");
            return None;
        }
        let redis = Self {
            port: free_port(),
            dir: scratch_dir("redis"),
            tls,
            child: std::sync::Mutex::new(None),
        };
        redis.start_again();
        Some(redis)
    }

    /// Its URL (`rediss://` for a TLS one).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&self) {
        let taken = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut child) = taken {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (after [`kill`](Self::kill)); waits
    /// until it answers.
    pub fn start_again(&self) {
        self.kill();
        let log = self.dir.join("redis.log");
        let port = self.port.to_string();
        let mut command = std::process::Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &port]),
            Some(tls) => command.args(["--port", "0", "--tls-port", &port]).args(tls),
        };
        let child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        *self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // A TLS server cannot be sent a plain PING: that one is ready once it accepts.
        let ready = || match self.tls {
            None => redis_answers(self.port),
            Some(_) => std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
        };
        while !ready() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on port {} did not answer within 10 s; see {}",
                self.port,
                log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it and starts it again.
    pub fn restart(&self) {
        self.kill();
        self.start_again();
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn redis_answers(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

/// A PostgreSQL server of a test's own (a fresh cluster, trust auth, user
/// `postgres`), on a free port, that the test may stop and start again.
#[derive(Debug)]
pub struct LocalPostgres {
    port: u16,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    as_postgres: bool,
}

impl LocalPostgres {
    /// Creates and starts one, or `None` (the test should return) when
    /// PostgreSQL's server programs are not installed outside CI. Panics in
    /// CI when they are missing. Takes a few seconds (`initdb`).
    pub fn start(test: &str) -> Option<Self> {
        let Some(bin) = postgres_bin() else {
            skip_or_fail(test, "PostgreSQL's initdb is not installed");
            return None;
        };
        // initdb and postgres refuse to run as root: use the postgres account then.
        let as_postgres = is_root();
        let dir = scratch_dir("postgres");
        let pg = Self {
            port: free_port(),
            dir,
            bin,
            as_postgres,
        };
        if as_postgres {
            pg.run(
                std::process::Command::new("chown")
                    .args(["-R", "postgres:"])
                    .arg(&pg.dir),
            );
        }
        let data = pg.data();
        pg.run(pg.tool("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]));
        pg.start_again();
        Some(pg)
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it at once (`pg_ctl stop -m immediate`: no clean shutdown, as a crash).
    pub fn stop(&self) {
        let mut stop = self.tool("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
    }

    /// Starts it again (after [`stop`](Self::stop)); waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let mut start = self.tool("pg_ctl");
        start
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        self.run(&mut start);
    }

    /// Stops it and starts it again.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.join("data")
    }

    fn tool(&self, name: &str) -> std::process::Command {
        let path = self.bin.join(name);
        if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            std::process::Command::new(path)
        }
    }

    fn run(&self, command: &mut std::process::Command) {
        let out = command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
        assert!(
            out.status.success(),
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn postgres_bin() -> Option<std::path::PathBuf> {
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn installed(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn skip_or_fail(test: &str, reason: &str) {
    let reason = format!("{test}: {reason}; run scripts/services.sh to install it");
    if in_ci() {
        panic!("{reason} (CI=true: a missing service is a failure)");
    }
    eprintln!("skipped {reason}");
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

fn scratch_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "troupe-{what}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}
