//! The `troupe` binary as a user runs it.

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn troupe(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(args)
        .current_dir(dir)
        .env_remove("TROUPE_LLM")
        .env_remove("TROUPE_STORE")
        .env_remove("TROUPE_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("the troupe binary runs")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
    let cases: [(&[&str], &str); 5] = [
        (&["run", "--llm", "gpt-banana", "x"], "unknown --llm"),
        (
            &["run", "--llm", "mock:/no/such/file.json", "x"],
            "cannot read mock script",
        ),
        (&["run", "x"], "no --llm given"),
        (
            &["run", "--llm", "mock", "--store", "mysql://x", "x"],
            "unknown store URL",
        ),
        (
            &["tasks", "show", "01a20e2c-6271-759f-b7aa-07f5e691179c"],
            "no database at troupe.db",
        ),
    ];
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
    assert!(
        !dir.path().join("troupe.db").exists(),
        "bench must not touch ./troupe.db"
    );
}
