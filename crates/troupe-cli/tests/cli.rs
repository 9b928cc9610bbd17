//! The `troupe` binary as a user runs it.

// Test code: a failed expectation is meant to panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{stderr, stdout_json};
use serde_json::Value;

fn troupe(dir: &Path, args: &[&str]) -> Output {
    troupe_with(dir, args, &[])
}

fn troupe_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    common::run(dir, args, env)
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[test]
fn run_json_prints_exactly_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let out = troupe(
        dir.path(),
        &[
            "run",
            "--llm",
            "mock",
            "--json",
            "Write a sales report from sales.csv",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = stdout_json(&out);
    assert_eq!(
        keys(&doc),
        [
            "elapsed_ms",
            "result",
            "status",
            "subtasks",
            "task_id",
            "usage"
        ]
    );
    assert_eq!(doc["status"], "completed");
    assert!(doc["result"].as_str().unwrap().contains("sales.csv"));
    assert!(doc["elapsed_ms"].as_u64().is_some());
    assert_eq!(keys(&doc["usage"]), ["completion_tokens", "prompt_tokens"]);
    let subtasks = doc["subtasks"].as_array().unwrap();
    assert_eq!(subtasks.len(), 3);
    for s in subtasks {
        assert_eq!(keys(s), ["attempts", "id", "result", "role", "status"]);
        assert_eq!(s["status"], "completed");
    }
    // The default store is ./troupe.db, and nothing is drawn when stderr is not a terminal.
    assert!(dir.path().join("troupe.db").exists());
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn run_prints_the_answer_and_the_ledgers_can_be_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = troupe(
        dir.path(),
        &["run", "--llm", "mock", "Review this code for security bugs"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.starts_with("Answer to: Review this code for security bugs"),
        "{answer}"
    );
    assert!(stderr(&out).contains("completed in"), "{}", stderr(&out));

    let list = troupe(dir.path(), &["tasks", "list", "--json"]);
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    let tasks = stdout_json(&list);
    assert_eq!(tasks.as_array().unwrap().len(), 1);
    let id = tasks[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(tasks[0]["subtasks_completed"], 3);

    let show = troupe(dir.path(), &["tasks", "show", &id, "--json"]);
    assert_eq!(show.status.code(), Some(0), "{}", stderr(&show));
    let ledgers = stdout_json(&show);
    assert_eq!(ledgers["task_ledger"]["id"], id.as_str());
    let events: Vec<&str> = ledgers["progress_ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"task_submitted"));
    assert_eq!(events.last(), Some(&"task_completed"));

    let text = troupe(dir.path(), &["tasks", "show", &id]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Progress ledger:") && text.contains("subtask_completed"),
        "{text}"
    );

    // A second process with the same file sees the first task unchanged.
    let again = troupe(
        dir.path(),
        &["run", "--llm", "mock", "--json", "Another goal"],
    );
    assert_eq!(again.status.code(), Some(0));
    let show_again = troupe(dir.path(), &["tasks", "show", &id, "--json"]);
    assert_eq!(stdout_json(&show_again), ledgers);
}

#[test]
fn a_task_that_fails_exits_nonzero_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.json");
    std::fs::write(
        &script,
        r#"{"steps": [{"kind": "plan", "reply": "I'd rather not.", "repeat": true}]}"#,
    )
    .unwrap();
    let spec = format!("mock:{}", script.display());
    let out = troupe(
        dir.path(),
        &["run", "--llm", &spec, "--json", "Do something"],
    );
    assert_eq!(out.status.code(), Some(1));
    let doc = stdout_json(&out);
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["result"], Value::Null);
    assert!(
        stderr(&out).contains("no valid plan after 3 replies"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &["run", "--llm", "gpt-banana", "x"],
            "unknown LLM \"gpt-banana\"",
        ),
        (
            &["run", "--llm", "mock:/no/such/file.json", "x"],
            "cannot read mock script",
        ),
        (&["run", "--llm", "openai", "x"], "needs OPENAI_API_KEY"),
        (
            &["run", "--llm", "http://127.0.0.1:9/v1", "x"],
            "needs a model name (--model NAME",
        ),
        (
            &["run", "--llm", "mock", "--structured-output", "xml", "x"],
            "unknown structured output mode",
        ),
        (
            &["run", "--llm", "mock", "--store", "mysql://x", "x"],
            "unknown store URL",
        ),
        (
            &["tasks", "show", "01a20e2c-6271-759f-b7aa-07f5e691179c"],
            "no database at troupe.db",
        ),
    ];
    // The default (no key: the local model) and --llm local say how to install it.
    let missing = [
        ("TROUPE_HOME", "/nonexistent/troupe-home"),
        ("TROUPE_LLAMA_SERVER", ""),
        ("TROUPE_LOCAL_MODEL", ""),
    ];
    for args in [&["run", "x"][..], &["run", "--llm", "local", "x"][..]] {
        let out = troupe_with(dir.path(), args, &missing);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("scripts/local-model.sh"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    for (args, message) in cases {
        let out = troupe(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }

    let config = dir.path().join("troupe.toml");
    std::fs::write(&config, "[orchestrator]\nmax_atempts = 3\n").unwrap();
    let out = troupe(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "run",
            "--llm",
            "mock",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("max_atempts"), "{}", stderr(&out));

    // A store or bus that cannot be reached is named without its password.
    for args in [
        &[
            "tasks",
            "list",
            "--store",
            "postgres://me:hunter2@127.0.0.1:1/db",
        ][..],
        &["workers", "--bus", "redis://me:hunter2@127.0.0.1:1"][..],
    ] {
        let out = troupe(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("me:***@127.0.0.1:1"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("hunter2"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn the_config_file_sets_the_backend_and_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("troupe.toml");
    std::fs::write(
        &config,
        "[backend]\nllm = \"mock\"\nstore = \"sqlite://from-config.db\"\n[workers]\nper_role = 1\n",
    )
    .unwrap();
    let out = troupe(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "run",
            "--json",
            "Goal",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.path().join("from-config.db").exists());
}

#[test]
fn bench_prints_its_figures_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = troupe(
        dir.path(),
        &[
            "bench",
            "--llm",
            "mock",
            "--tasks",
            "50",
            "--concurrency",
            "8",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = stdout_json(&out);
    assert_eq!(report["completed"], 50);
    assert_eq!(report["failed"], 0);
    for key in ["tasks_per_sec", "p50_ms", "p99_ms"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    assert!(report["p50_ms"].as_f64() <= report["p99_ms"].as_f64());
    // The mock's plans are always valid on the first reply.
    assert_eq!(report["plans"]["first_reply_valid"], 50, "{report}");
    assert_eq!(report["plans"]["valid_after_repair_rate"], 1.0, "{report}");
    assert!(report["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(
        !dir.path().join("troupe.db").exists(),
        "bench must not touch ./troupe.db"
    );
}

/// Whether the offline model is installed; outside CI its absence skips the test.
fn local_model_installed() -> bool {
    let paths = troupe_llm::LocalPaths::resolve(|name| std::env::var(name).ok());
    let installed = paths.check().is_ok();
    if !installed {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and the local model is not installed (run scripts/local-model.sh)"
        );
        eprintln!("skipped: the local model is not installed (run scripts/local-model.sh)");
    }
    installed
}

#[test]
fn run_completes_a_goal_with_the_offline_model() {
    if !local_model_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_run = troupe_with(
        dir.path(),
        &[
            "run",
            "--llm",
            "local",
            "--json",
            "Write a short sales report from these figures: Q1 120 units, Q2 150 units, Q3 90 units",
        ],
        &[("RUST_LOG", "troupe_llm=info")],
    );
    let out = &out_run;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    let doc = stdout_json(out);
    assert_eq!(doc["status"], "completed", "{doc}");
    assert!(!doc["result"].as_str().unwrap().trim().is_empty(), "{doc}");
    let subtasks = doc["subtasks"].as_array().unwrap();
    assert!(!subtasks.is_empty());
    for s in subtasks {
        assert_eq!(s["status"], "completed", "{s}");
    }
    // Real token counts from the server, not estimates.
    assert!(
        doc["usage"]["prompt_tokens"].as_u64().unwrap() > 100,
        "{doc}"
    );
    assert!(
        doc["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{doc}"
    );

    // The ledgers name who spent the tokens.
    let id = doc["task_id"].as_str().unwrap();
    let out = troupe(dir.path(), &["tasks", "show", "--json", id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ledgers = stdout_json(&out);
    let by_agent = ledgers["usage_by_agent"].as_object().unwrap();
    assert!(
        by_agent.keys().any(|a| a.starts_with("orchestrator-")),
        "{by_agent:?}"
    );
    assert!(by_agent.len() >= 2, "{by_agent:?}");
    // The llama-server that run started is gone once run has exited.
    let log = stderr(&out_run);
    let line = log
        .lines()
        .find(|l| l.contains("starting llama-server"))
        .unwrap_or_else(|| panic!("no start line in: {log}"));
    let after = &line[line.find("pid").unwrap() + 3..];
    let pid: String = after
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(!pid.is_empty(), "{line}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "llama-server {pid} still runs"
    );
}

#[test]
fn a_killed_run_leaves_no_llama_server_behind() {
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;

    if !local_model_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::command(
        dir.path(),
        &[
            "run",
            "--llm",
            "local",
            "--store",
            "memory",
            "Write a long essay about lighthouses",
        ],
    )
    .env("RUST_LOG", "troupe_llm=info")
    .env("TROUPE_LOG_FORMAT", "text")
    .env("NO_COLOR", "1")
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Killed however the test ends, so that a failure leaves no run behind.
    let stderr = child.stderr.take().unwrap();
    let mut child = common::Running(child);
    let mut lines = BufReader::new(stderr).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("llama-server is ready"))
        .expect("the server became ready");
    let port: u16 = ready
        .rsplit("port=")
        .next()
        .and_then(|p| {
            p.chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no port in {ready:?}"));
    let listening = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(listening());
    // SIGKILL: troupe gets no chance to clean up; the watchdog must.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    troupe_testkit::eventually_blocking(
        &format!("llama-server stops listening on {port} after troupe was killed"),
        std::time::Duration::from_secs(15),
        || (!listening()).then_some(()),
    );
}

#[test]
fn a_fallback_llm_takes_over_when_the_first_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("troupe.toml");
    std::fs::write(
        &config,
        "[llm]\nretry = { initial = \"10ms\", max = \"20ms\", multiplier = 2.0, jitter = 0.0 }\nbreaker = { failure_threshold = 2, reset_timeout = \"1m\" }\n",
    )
    .unwrap();
    // Nothing listens on port 9: connections are refused, the breaker opens, the mock answers.
    let out = troupe(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "run",
            "--llm",
            "http://127.0.0.1:9/v1",
            "--model",
            "absent",
            "--fallback-llm",
            "mock",
            "--store",
            "memory",
            "--json",
            "Write a haiku about rust",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["status"], "completed");

    let out = troupe(
        dir.path(),
        &[
            "run",
            "--llm",
            "mock",
            "--fallback-llm",
            "http://127.0.0.1:9/v1",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("#NAME"), "{}", stderr(&out));
}
