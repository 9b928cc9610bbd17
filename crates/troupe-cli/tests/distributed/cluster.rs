//! The cluster the distributed tests run: a Redis, a PostgreSQL and a
//! working directory with a configuration of short timings, on which they
//! start `troupe serve` coordinators and `troupe worker` processes; and the
//! checks of the ledgers those processes leave.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use troupe_testkit::services::{LocalPostgres, LocalRedis};

use crate::common::Running;

/// Timings short enough for a test: a dead worker's message is taken again
/// after 2 s, a dead coordinator's task after its 2 s lease lapses.
const CONFIG: &str = r#"
[bus]
visibility_timeout = "2s"

[workers]
heartbeat = "500ms"
shutdown_grace = "2s"

[coordinator]
lease_ttl = "2s"
scan_interval = "500ms"

[orchestrator]
subtask_timeout = "10s"

[retry.store]
max_attempts = 60
backoff = { initial = "100ms", max = "1s" }

[retry.bus]
max_attempts = 60
backoff = { initial = "100ms", max = "1s" }
"#;

/// The roles the mock LLM's plans use.
pub(crate) const ROLES: [&str; 3] = ["researcher", "analyst", "writer"];

/// A `troupe` process whose stderr is collected in the background.
pub(crate) struct Proc {
    running: Running,
    log: Arc<Mutex<String>>,
}

impl Proc {
    pub(crate) fn kill(&mut self) {
        self.running.0.kill().unwrap();
        self.running.0.wait().unwrap();
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// Redis, PostgreSQL and a working directory with the configuration.
pub(crate) struct Cluster {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) redis: LocalRedis,
    pub(crate) pg: LocalPostgres,
    http: reqwest::blocking::Client,
}

impl Cluster {
    pub(crate) fn start(test: &str) -> Option<Self> {
        let redis = LocalRedis::start(test)?;
        let pg = LocalPostgres::start(test)?;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("troupe.toml"), CONFIG).unwrap();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Some(Self {
            dir,
            redis,
            pg,
            http,
        })
    }

    /// A mock LLM script whose every reply takes `delay_ms`.
    pub(crate) fn slow_llm(&self, delay_ms: u64) -> String {
        let path = self.dir.path().join(format!("slow-{delay_ms}.json"));
        std::fs::write(&path, json!({"delay_ms": delay_ms}).to_string()).unwrap();
        format!("mock:{}", path.display())
    }

    fn spawn(&self, args: &[&str], ready: &str) -> (Proc, String) {
        let config = self.dir.path().join("troupe.toml");
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend([
            "--bus".into(),
            self.redis.url(),
            "--config".into(),
            config.display().to_string(),
        ]);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut child = crate::common::command(self.dir.path(), &all)
            .env("TROUPE_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the troupe binary runs");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(String::new()));
        let mut line = String::new();
        let found = loop {
            line.clear();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                panic!(
                    "troupe {args:?} ended before saying {ready:?}: {}",
                    log.lock().unwrap()
                );
            }
            log.lock().unwrap().push_str(&line);
            if let Some(at) = line.find(ready) {
                break line[at + ready.len()..].trim().to_owned();
            }
        };
        // Keep draining stderr, so the process never blocks on a full pipe.
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        (
            Proc {
                running: Running(child),
                log,
            },
            found,
        )
    }

    /// A coordinator (`troupe serve`, no workers of its own); returns it and its base URL.
    pub(crate) fn coordinator(&self) -> (Proc, String) {
        let store = self.pg.url();
        self.spawn(
            &[
                "serve",
                "--llm",
                "mock",
                "--store",
                &store,
                "--addr",
                "127.0.0.1:0",
            ],
            "serving the API on ",
        )
    }

    /// A worker process of `role`; returns it and its agent id.
    pub(crate) fn worker(&self, role: &str, llm: &str) -> (Proc, String) {
        let (proc, rest) = self.spawn(
            &["worker", "--role", role, "--llm", llm, "--concurrency", "8"],
            "troupe: worker ",
        );
        let agent = rest.split_whitespace().next().unwrap().to_owned();
        (proc, agent)
    }

    pub(crate) fn submit(&self, base: &str, goal: &str) -> String {
        let accepted: Value = self
            .http
            .post(format!("{base}/v1/tasks"))
            .json(&json!({ "goal": goal }))
            .send()
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .unwrap();
        accepted["task_id"].as_str().unwrap().to_owned()
    }

    /// The task's ledgers, or `None` while the coordinator cannot answer.
    pub(crate) fn ledger(&self, base: &str, id: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{base}/v1/tasks/{id}/ledger"))
            .send()
            .ok()?;
        response
            .status()
            .is_success()
            .then(|| response.json().ok())?
    }

    /// Waits until every task has ended; returns their ledgers.
    pub(crate) fn wait_all(
        &self,
        base: &str,
        ids: &[String],
        within: Duration,
        procs: &[&Proc],
    ) -> Vec<Value> {
        let mut done: HashMap<String, Value> = HashMap::new();
        let what = format!("all {} tasks end", ids.len());
        let explain = || {
            let logs: Vec<String> = procs.iter().map(|p| p.log()).collect();
            format!("logs:\n{}", logs.join("\n-----\n"))
        };
        troupe_testkit::eventually_blocking_explained(
            &what,
            within,
            || {
                let open: Vec<&String> = ids.iter().filter(|id| !done.contains_key(*id)).collect();
                for id in open {
                    // The end's progress entry is the last write of a task.
                    if let Some(ledger) = self.ledger(base, id)
                        && ["task_completed", "task_failed", "task_cancelled"]
                            .iter()
                            .any(|end| !events(&ledger, end).is_empty())
                    {
                        // Read again: the task and its progress are two reads, and
                        // the first may have caught the task row before its end.
                        let settled = self.ledger(base, id).unwrap_or(ledger);
                        done.insert(id.clone(), settled);
                    }
                }
                (done.len() == ids.len()).then_some(())
            },
            explain,
        );
        ids.iter().map(|id| done.remove(id).unwrap()).collect()
    }
}

/// The progress entries of `event` in a ledger.
pub(crate) fn events<'a>(ledger: &'a Value, event: &str) -> Vec<&'a Value> {
    ledger["progress_ledger"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == event)
        .collect()
}

/// Every task completed once, each subtask of its plan completed.
pub(crate) fn assert_completed_once(ledgers: &[Value]) {
    for ledger in ledgers {
        let task = &ledger["task_ledger"];
        assert_eq!(task["status"], "completed", "{ledger:#}");
        assert_eq!(events(ledger, "task_completed").len(), 1, "{ledger:#}");
        let revision = &task["plan_revision"];
        for s in task["subtasks"].as_array().unwrap() {
            if &s["revision"] == revision {
                assert_eq!(s["status"], "completed", "{ledger:#}");
                assert_eq!(
                    events(ledger, "subtask_completed")
                        .iter()
                        .filter(|e| e["subtask_id"] == s["id"])
                        .count(),
                    1,
                    "subtask {} completed more than once: {ledger:#}",
                    s["id"]
                );
            }
        }
    }
}

pub(crate) fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    troupe_testkit::eventually_blocking(what, within, || check().then_some(()));
}
