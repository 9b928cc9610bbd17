//! `troupe serve` and `troupe run --metrics-addr` as an operator runs them:
//! the API and `/metrics` answer on the printed address, and SIGTERM stops
//! the server cleanly.

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{ChildStderr, Command, Stdio};
use std::time::Duration;

use common::Running;
use serde_json::{Value, json};
use troupe_testkit::eventually_blocking;

fn spawn(dir: &std::path::Path, args: &[&str]) -> (Running, BufReader<ChildStderr>) {
    let mut child = common::command(dir, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the troupe binary runs");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    (Running(child), stderr)
}

/// The URL the process printed after `what on `.
fn printed_url(stderr: &mut BufReader<ChildStderr>, what: &str) -> String {
    let needle = format!("{what} on ");
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no {needle:?} line"
        );
        if let Some(at) = line.find(&needle) {
            return line[at + needle.len()..].trim().to_owned();
        }
    }
}

/// One sample of a Prometheus scrape, 0 if absent.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn serve_runs_submitted_goals_and_exposes_metrics_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, mut stderr) = spawn(
        dir.path(),
        &[
            "serve",
            "--llm",
            "mock",
            "--store",
            "memory",
            "--addr",
            "127.0.0.1:0",
        ],
    );
    let base = printed_url(&mut stderr, "serving the API");
    let http = reqwest::blocking::Client::new();

    let health: Value = http
        .get(format!("{base}/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let accepted = http
        .post(format!("{base}/v1/tasks"))
        .json(&json!({"goal": "Write a haiku about rust"}))
        .send()
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let id = accepted.json::<Value>().unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let doc = eventually_blocking("the task ends", Duration::from_secs(30), || {
        let doc: Value = http
            .get(format!("{base}/v1/tasks/{id}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        ["completed", "failed"]
            .contains(&doc["status"].as_str().unwrap_or_default())
            .then_some(doc)
    });
    assert_eq!(doc["status"], "completed", "{doc}");

    let scrape = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        sample(&scrape, r#"multiagent_tasks_total{status="completed"}"#),
        1.0
    );
    assert_eq!(
        sample(&scrape, r#"multiagent_messages_total{type="task_assign"}"#),
        3.0
    );
    assert!(scrape.contains("# HELP multiagent_llm_tokens_total"));

    // SIGTERM: the server stops accepting and exits 0.
    let pid = server.0.id().to_string();
    let term = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term.success());
    let status = eventually_blocking(
        "troupe serve stops on SIGTERM",
        Duration::from_secs(15),
        || server.0.try_wait().unwrap(),
    );
    assert_eq!(status.code(), Some(0));
    assert!(
        http.get(format!("{base}/healthz")).send().is_err(),
        "nothing listens any more"
    );
}

#[test]
fn run_with_a_metrics_address_can_be_scraped_while_the_task_runs() {
    let dir = tempfile::tempdir().unwrap();
    // A slow synthesis keeps the task running while the test scrapes.
    let script = dir.path().join("script.json");
    std::fs::write(
        &script,
        json!({"steps": [{"kind": "synthesize", "delay_ms": 3000, "reply": "Done."}]}).to_string(),
    )
    .unwrap();
    let spec = format!("mock:{}", script.display());
    let (mut run, mut stderr) = spawn(
        dir.path(),
        &[
            "run",
            "--llm",
            &spec,
            "--store",
            "memory",
            "--json",
            "--metrics-addr",
            "127.0.0.1:0",
            "A slow goal",
        ],
    );
    let base = printed_url(&mut stderr, "metrics");
    let http = reqwest::blocking::Client::new();
    let scrape = eventually_blocking("the task runs", Duration::from_secs(10), || {
        let scrape = http
            .get(format!("{base}/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        (sample(&scrape, r#"multiagent_tasks_total{status="running"}"#) >= 1.0).then_some(scrape)
    });
    assert_eq!(
        sample(&scrape, r#"multiagent_tasks_total{status="running"}"#),
        1.0
    );
    assert_eq!(sample(&scrape, "multiagent_pending_tasks"), 1.0);
    assert_eq!(
        sample(&scrape, r#"multiagent_tasks_total{status="completed"}"#),
        0.0
    );
    let status = run.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
