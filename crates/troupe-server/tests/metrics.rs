//! `/metrics` scraped over HTTP while tasks run: the values move as they
//! should, and the text passes `promtool check metrics`.
//!
//! One test in this file: the recorder is global to the process.

// Test code: a failed expectation is meant to panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use troupe::Troupe;
use troupe::core::ledger::EventKind;
use troupe::core::llm::CallKind;
use troupe::core::task::TaskStatus;
use troupe_llm::mock::{MockError, MockLlm, Rule};
use troupe_server::{ApiState, Metrics, router, serve};

/// Every sample of a scrape, by its series (`name{labels}` as rendered).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn value(s: &HashMap<String, f64>, series: &str) -> f64 {
    s.get(series).copied().unwrap_or(0.0)
}

async fn scrape(http: &reqwest::Client, base: &str) -> String {
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    r.text().await.unwrap()
}

/// `promtool check metrics` on `text`; in CI a missing promtool is a failure.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "skipping promtool check metrics: promtool cannot run ({e}); scripts/test.sh installs it"
            );
            return;
        }
        Err(e) => panic!("promtool is required in CI: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scrape ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_tasks_run_and_pass_promtool() {
    let metrics = Metrics::install().unwrap();
    // The first synthesis is slow (so a task is seen pending), one work call
    // fails once with a 503 (an LLM error, retried).
    let llm = MockLlm::builder()
        .rule(
            Rule::on(CallKind::Synthesize)
                .delay(Duration::from_millis(1_500))
                .times(1),
        )
        .rule(
            Rule::on(CallKind::Work)
                .subtask("s2")
                .error(MockError::Http {
                    status: 503,
                    body: "busy".into(),
                    retry_after_ms: None,
                })
                .times(1),
        )
        .build()
        .unwrap();
    let troupe = Troupe::builder().llm(llm).build().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let state = ApiState {
        troupe: Some(troupe.clone()),
        metrics: Some(metrics),
    };
    let server = tokio::spawn(serve(listener, router(state), stop.clone()));
    let http = reqwest::Client::new();

    let before = samples(&scrape(&http, &base).await);
    assert_eq!(
        value(&before, r#"multiagent_tasks_total{status="completed"}"#),
        0.0
    );
    assert_eq!(
        value(&before, r#"multiagent_active_workers{role="writer"}"#),
        2.0
    );

    // One slow task: pending while it runs.
    let slow = troupe.submit("The slow one").await.unwrap();
    // Its synthesis (1.5 s) has begun: it is pending for a while yet.
    let mut steps = slow.events();
    while let Some(step) = steps.next().await {
        if step.unwrap().event == EventKind::SynthesisStarted {
            break;
        }
    }
    let during = samples(&scrape(&http, &base).await);
    assert_eq!(value(&during, "multiagent_pending_tasks"), 1.0);
    assert_eq!(
        value(&during, r#"multiagent_tasks_total{status="pending"}"#),
        1.0
    );
    assert_eq!(
        value(&during, r#"multiagent_tasks_total{status="completed"}"#),
        0.0
    );
    assert_eq!(slow.wait().await.unwrap().status, TaskStatus::Completed);

    let mut ids = Vec::new();
    for n in 0..4 {
        let task = troupe.run(format!("Goal number {n}")).await.unwrap();
        assert_eq!(task.status, TaskStatus::Completed);
        ids.push(task.id.to_string());
    }
    let text = scrape(&http, &base).await;
    let after = samples(&text);
    let delta = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(delta(r#"multiagent_tasks_total{status="completed"}"#), 5.0);
    assert_eq!(delta(r#"multiagent_tasks_total{status="running"}"#), 5.0);
    assert_eq!(value(&after, "multiagent_pending_tasks"), 0.0);
    assert_eq!(
        delta(r#"multiagent_task_duration_seconds_count{status="completed"}"#),
        5.0
    );
    assert!(
        value(
            &after,
            r#"multiagent_task_duration_seconds_sum{status="completed"}"#
        ) >= 1.5,
        "the slow task's 1.5 s are in the sum"
    );
    // 3 assignments, 3 starts, 3 results per task.
    assert_eq!(
        delta(r#"multiagent_messages_total{type="task_assign"}"#),
        15.0
    );
    assert_eq!(
        delta(r#"multiagent_messages_total{type="task_result"}"#),
        15.0
    );
    assert_eq!(
        delta(r#"multiagent_message_latency_seconds_count{type="task_assign"}"#),
        15.0
    );
    assert_eq!(delta(r#"multiagent_llm_errors_total{class="server"}"#), 1.0);
    assert_eq!(
        delta(r#"multiagent_llm_call_duration_seconds_count{kind="work",outcome="server"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"multiagent_llm_call_duration_seconds_count{kind="work",outcome="ok"}"#),
        15.0
    );
    assert!(delta(r#"multiagent_llm_tokens_total{kind="plan",direction="input"}"#) > 0.0);
    assert!(delta(r#"multiagent_llm_tokens_total{kind="work",direction="output"}"#) > 0.0);
    assert!(after.contains_key(r#"multiagent_queue_depth{topic="role.writer"}"#));
    assert!(after.contains_key(r#"multiagent_queue_depth{topic="inbox"}"#));
    assert_eq!(
        value(&after, r#"multiagent_llm_circuit_state{provider="mock"}"#),
        0.0
    );
    assert!(text.contains("# HELP multiagent_llm_circuit_state"));
    // No label carries an id.
    for series in after.keys() {
        assert!(!series.contains("orchestrator-"), "{series}");
        assert!(
            !series.contains("=\"s1\"") && !series.contains("=\"s2\""),
            "{series}"
        );
        assert!(
            !ids.iter().any(|id| series.contains(id.as_str())),
            "{series}"
        );
    }
    promtool_check(&text);

    drop(http);
    stop.cancel();
    server.await.unwrap().unwrap();
    troupe.shutdown().await;
}
