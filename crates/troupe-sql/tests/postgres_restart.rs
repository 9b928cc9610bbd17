//! A PostgreSQL restart under a live store: calls fail as retryable while the
//! server is down, and the pool reconnects by itself once it is back.
//!
//! The test runs its own throw-away server (initdb on a free port), never the
//! shared one. It needs the PostgreSQL server binaries (`apt-get install
//! postgresql`); without them it is skipped, except in CI.

// Test code: a failed expectation is meant to panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use troupe_core::store::{StoreError, TaskStore};
use troupe_sql::{PostgresOptions, PostgresStore};
use troupe_testkit::conformance::store::new_task;

/// A private PostgreSQL cluster in a temporary directory.
struct PrivateServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

/// The newest installed server's `bin` directory.
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        let version = p
            .parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str());
        version.and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
    });
    found.pop()
}

/// Whether this process runs as root (PostgreSQL refuses to; we switch user).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

impl PrivateServer {
    /// Creates and starts a cluster, or `None` when the binaries are missing (outside CI).
    fn start() -> Option<Self> {
        let Some(bin) = server_bin() else {
            let reason =
                "a_restarted_server: no PostgreSQL server binaries under /usr/lib/postgresql";
            assert!(!troupe_testkit::services::in_ci(), "{reason} (CI=true)");
            eprintln!("skipped {reason}");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            run(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Self { bin, dir, port };
        server.pg(
            "initdb",
            &["-D", &server.data(), "-U", "postgres", "--auth=trust", "-N"],
        );
        server.ctl("start");
        Some(server)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs a server program, as the `postgres` user when we are root.
    fn pg(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        run(cmd.args(args));
    }

    fn ctl(&self, action: &str) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let data = self.data();
        let mut args = vec!["-D", &data, "-l", &log, "-o", &options, "-w"];
        if action == "stop" {
            args.extend(["-m", "fast"]);
        }
        args.push(action);
        self.pg("pg_ctl", &args);
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let data = self.data();
        let bin = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        // Already stopped is fine.
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_reconnected_to() {
    let Some(server) = tokio::task::spawn_blocking(PrivateServer::start)
        .await
        .unwrap()
    else {
        return;
    };
    let options = PostgresOptions {
        acquire_timeout: Duration::from_secs(2),
        ..PostgresOptions::default()
    };
    let store = PostgresStore::connect(&server.url(), options)
        .await
        .unwrap();
    let task = new_task("outlives a restart");
    store.create_task(&task).await.unwrap();
    assert!(store.get_task(task.id).await.unwrap().is_some());

    let server = tokio::task::spawn_blocking(move || {
        server.ctl("stop");
        server
    })
    .await
    .unwrap();
    let down = store.get_task(task.id).await;
    assert!(
        matches!(&down, Err(e @ StoreError::Unavailable(_)) if e.is_retryable()),
        "{down:?}"
    );

    let server = tokio::task::spawn_blocking(move || {
        server.ctl("start");
        server
    })
    .await
    .unwrap();
    // The first call after the restart works: the pool drops the dead
    // connections and opens new ones by itself.
    let back = store.get_task(task.id).await.unwrap();
    assert_eq!(back.map(|t| t.id), Some(task.id));
    store.create_task(&new_task("after")).await.unwrap();

    store.close().await;
    drop(server);
}
