//! What an operator sees of a run: JSON log lines with the task's ids and
//! every lifecycle event, no secret in any log, and the whole task as one
//! trace in an OTLP receiver. What they run against (the fake servers, the
//! log and span readers) is in `support`.

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "observability/support.rs"]
mod support;

use std::collections::{HashMap, HashSet};

use axum::Router;
use axum::routing::post;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};
use support::{
    FakeOpenAi, attr_int, attr_str, completions, log_lines, span, start, text, traced_run, troupe,
};

#[test]
fn json_logs_carry_the_ids_and_every_lifecycle_event() {
    let dir = tempfile::tempdir().unwrap();
    // s1 fails once (a retry), s2 fails for good (a re-plan).
    let script = dir.path().join("script.json");
    std::fs::write(
        &script,
        json!({"steps": [
            {"kind": "work", "subtask": "s1", "error": {"type": "transport"}, "times": 1},
            {"kind": "work", "subtask": "s2", "error": {"type": "http", "status": 400, "body": "no"}, "times": 1}
        ]})
        .to_string(),
    )
    .unwrap();
    let config = dir.path().join("troupe.toml");
    std::fs::write(
        &config,
        "[llm]\nmax_attempts = 1\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let spec = format!("mock:{}", script.display());
    let out = troupe(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "run",
            "--llm",
            &spec,
            "--store",
            "memory",
            "--json",
            "Write a haiku about rust",
        ],
        &[("TROUPE_ENV", "development")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let task_id = doc["task_id"].as_str().unwrap();
    let lines = log_lines(&out);

    let events: HashSet<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["event"].as_str())
        .collect();
    for lifecycle in [
        "task_submitted",
        "planning_started",
        "plan_accepted",
        "subtask_dispatched",
        "subtask_started",
        "subtask_completed",
        "attempt_failed",
        "subtask_failed",
        "replanning",
        "synthesis_started",
        "task_completed",
    ] {
        assert!(
            events.contains(lifecycle),
            "no {lifecycle} event in {events:?}"
        );
    }
    let failed = lines
        .iter()
        .find(|l| l["fields"]["event"] == "subtask_failed")
        .unwrap();
    assert_eq!(failed["level"], "WARN");

    for line in lines.iter().filter(|l| l["fields"]["event"].is_string()) {
        assert!(
            span(line, "task").is_some(),
            "a step without its task: {line}"
        );
    }
    let mut request_ids = HashSet::new();
    let mut with_task = 0;
    for line in &lines {
        if let Some(task) = span(line, "task") {
            with_task += 1;
            assert_eq!(task["task_id"], task_id, "{line}");
            request_ids.insert(task["request_id"].as_str().unwrap().to_owned());
        }
        if let Some(dispatch) = span(line, "subtask.dispatch") {
            assert!(dispatch["subtask_id"].is_string(), "{line}");
            assert!(dispatch["attempt"].is_u64(), "{line}");
        }
        if let Some(run) = span(line, "subtask.run") {
            assert_eq!(run["task_id"], task_id, "{line}");
            for field in ["subtask_id", "agent_id", "request_id"] {
                assert!(run[field].is_string(), "no {field} in {line}");
            }
            request_ids.insert(run["request_id"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        with_task > 20,
        "only {with_task} lines inside the task span"
    );
    assert_eq!(
        request_ids.len(),
        1,
        "one request id everywhere: {request_ids:?}"
    );

    // Workers' steps are logged inside their subtask's span, on both sides.
    let started = lines
        .iter()
        .find(|l| l["fields"]["message"] == "subtask started")
        .expect("the worker logs its start");
    assert!(span(started, "subtask.run").is_some(), "{started}");
    let dispatched = lines
        .iter()
        .find(|l| l["fields"]["event"] == "subtask_dispatched")
        .unwrap();
    assert!(
        span(dispatched, "subtask.dispatch").is_some(),
        "{dispatched}"
    );

    // Every bus send and receive, at debug.
    for message in ["bus send", "bus receive"] {
        let line = lines
            .iter()
            .find(|l| l["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line"));
        assert_eq!(line["level"], "DEBUG");
        assert!(line["fields"]["message_type"].is_string(), "{line}");
    }
}

#[test]
fn warnings_in_production_name_their_task_and_subtask() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.json");
    std::fs::write(
        &script,
        json!({"steps": [
            {"kind": "work", "subtask": "s2", "error": {"type": "http", "status": 400, "body": "no"}, "times": 1}
        ]})
        .to_string(),
    )
    .unwrap();
    let spec = format!("mock:{}", script.display());
    let out = troupe(
        dir.path(),
        &[
            "run", "--llm", &spec, "--store", "memory", "--json", "A haiku",
        ],
        &[("TROUPE_LOG_FORMAT", "json")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let task_id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["task_id"].clone();
    let lines = log_lines(&out);
    assert!(
        lines
            .iter()
            .all(|l| l["level"] == "WARN" || l["level"] == "ERROR"),
        "{lines:?}"
    );
    let failed = lines
        .iter()
        .find(|l| l["fields"]["event"] == "subtask_failed")
        .expect("the failure is a warning");
    let task = span(failed, "task").expect("the warning names its task");
    assert_eq!(task["task_id"], task_id);
    assert!(task["request_id"].is_string() && task["agent_id"].is_string());
    assert_eq!(
        span(failed, "subtask.dispatch").unwrap()["subtask_id"],
        "s2"
    );
}

#[test]
fn the_production_default_logs_nothing_for_a_good_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = troupe(
        dir.path(),
        &[
            "run", "--llm", "mock", "--store", "memory", "--json", "A haiku",
        ],
        &[("TROUPE_LOG_FORMAT", "json")],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(log_lines(&out), Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_api_key_ever_reaches_the_logs() {
    const KEY: &str = "sk-test-4f9a1c0e7b2d48a6b3e5f7091a2c4d6e";
    let addr = start(
        Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(FakeOpenAi { key: KEY.into() }),
    )
    .await;
    let url = format!("http://{addr}/v1");
    let dir = tempfile::tempdir().unwrap();
    let run = |key: &'static str| {
        let dir = dir.path().to_owned();
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            troupe(
                &dir,
                &[
                    "run", "--llm", &url, "--model", "fake-1", "--store", "memory", "--json",
                    "A haiku",
                ],
                &[
                    ("TROUPE_LLM_API_KEY", key),
                    ("RUST_LOG", "trace"),
                    ("TROUPE_LOG_FORMAT", "json"),
                ],
            )
        })
    };

    // The right key: a whole run, logged at the most verbose level.
    let good = run(KEY).await.unwrap();
    assert_eq!(good.status.code(), Some(0), "{}", text(&good.stderr));
    let logs = text(&good.stderr);
    assert!(logs.lines().count() > 50, "trace logging is on: {logs}");
    assert!(!logs.contains(KEY) && !text(&good.stdout).contains(KEY));
    assert!(!logs.contains(&KEY[3..20]), "not even part of the key");

    // A wrong key, which the server echoes back in its error.
    const WRONG: &str = "sk-test-0000aaaa1111bbbb2222cccc3333dddd";
    let bad = run(WRONG).await.unwrap();
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad.stderr));
    let all = format!("{}{}", text(&bad.stderr), text(&bad.stdout));
    assert!(all.contains("refused the credentials"), "{all}");
    assert!(!all.contains(WRONG), "the echoed key is redacted: {all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_replans_under_the_task_not_under_the_failed_attempt() {
    // s1 and s2 both fail first: two failures in a row, over max_stalls = 1.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.json");
    std::fs::write(
        &script,
        json!({"steps": [
            {"kind": "work", "subtask": "s1", "error": {"type": "transport"}, "times": 1},
            {"kind": "work", "subtask": "s2", "error": {"type": "transport"}, "times": 1}
        ]})
        .to_string(),
    )
    .unwrap();
    let config = dir.path().join("troupe.toml");
    std::fs::write(
        &config,
        "[llm]\nmax_attempts = 1\n[orchestrator]\nmax_stalls = 1\nretry = { initial = \"10ms\", max = \"10ms\", multiplier = 1.0, jitter = 0.0 }\n",
    )
    .unwrap();
    let spec = format!("mock:{}", script.display());
    let (_, spans) = traced_run(&["--config", config.to_str().unwrap(), "--llm", &spec]).await;
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    let kinds: Vec<String> = spans
        .iter()
        .filter_map(|s| attr_str(s, "call_kind"))
        .collect();
    for kind in ["evaluate", "replan"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} call in {kinds:?}"
        );
    }
    for chat in spans.iter().filter(|s| s.name.starts_with("chat ")) {
        let kind = attr_str(chat, "call_kind").unwrap();
        if ["plan", "replan", "evaluate", "synthesize"].contains(&kind.as_str()) {
            let parent = by_id.get(chat.parent_span_id.as_slice()).unwrap();
            assert_eq!(parent.name, "task", "the {kind} call's parent");
        }
    }
    // Every dispatch span ended with its outcome, superseded ones included.
    for d in spans.iter().filter(|s| s.name.starts_with("dispatch ")) {
        let outcome = attr_str(d, "outcome");
        assert!(
            matches!(
                outcome.as_deref(),
                Some("completed" | "retry" | "failed" | "superseded")
            ),
            "{} ended with {outcome:?}",
            d.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_one_trace_with_the_dispatch_parenting_the_worker() {
    let (doc, spans) = traced_run(&["--llm", "mock"]).await;
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    let parent = |s: &Span| by_id.get(s.parent_span_id.as_slice()).copied();
    let named = |prefix: &str| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .collect()
    };

    let roots = named("task");
    assert_eq!(roots.len(), 1, "one root span per task");
    let root = roots[0];
    assert!(root.parent_span_id.is_empty(), "the task span is a root");
    assert_eq!(
        attr_str(root, "task_id").as_deref(),
        doc["task_id"].as_str()
    );
    assert!(attr_str(root, "request_id").is_some());
    assert!(
        spans.iter().all(|s| s.trace_id == root.trace_id),
        "every span of the run is in the task's trace: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );

    let dispatches = named("dispatch ");
    assert_eq!(dispatches.len(), 3, "one dispatch span per subtask");
    for d in &dispatches {
        assert_eq!(parent(d).map(|p| p.name.as_str()), Some("task"));
    }
    let runs = named("run ");
    assert_eq!(runs.len(), 3, "one worker span per subtask");
    for run in &runs {
        let dispatch = parent(run).expect("the worker span has a parent in the trace");
        assert!(
            dispatch.name.starts_with("dispatch "),
            "parent: {}",
            dispatch.name
        );
        assert_eq!(
            attr_str(run, "subtask_id"),
            attr_str(dispatch, "subtask_id")
        );
        assert!(attr_str(run, "agent_id").is_some());
    }

    let chats = named("chat ");
    assert_eq!(chats.len(), 5, "plan, three subtasks and the synthesis");
    for chat in &chats {
        assert_eq!(
            attr_str(chat, "gen_ai.operation.name").as_deref(),
            Some("chat")
        );
        assert_eq!(
            attr_str(chat, "gen_ai.request.model").as_deref(),
            Some("mock")
        );
        assert!(
            attr_int(chat, "gen_ai.usage.input_tokens")
                .unwrap_or_else(|| panic!("{:?}", chat.attributes))
                > 0
        );
        assert!(attr_int(chat, "gen_ai.usage.output_tokens").unwrap() > 0);
        let parent = parent(chat).expect("an LLM span has a parent");
        match attr_str(chat, "call_kind").as_deref() {
            Some("work") => assert!(parent.name.starts_with("run "), "{}", parent.name),
            Some("plan" | "replan" | "evaluate" | "synthesize") => {
                assert_eq!(parent.name, "task");
            }
            other => panic!("unexpected call kind {other:?}"),
        }
    }

    // Bus spans: the assignment is sent inside its dispatch span, and
    // received under the same context; replies are received under the worker's send.
    let sends = named("send ");
    let receives = named("receive ");
    assert!(
        sends.len() >= 9 && receives.len() >= 9,
        "{} sends, {} receives",
        sends.len(),
        receives.len()
    );
    for send in sends.iter().filter(|s| s.name.starts_with("send role.")) {
        assert!(parent(send).unwrap().name.starts_with("dispatch "));
    }
    for receive in receives
        .iter()
        .filter(|s| s.name.starts_with("receive role."))
    {
        assert!(parent(receive).unwrap().name.starts_with("dispatch "));
    }
    for receive in receives.iter().filter(|s| s.name == "receive inbox") {
        assert!(parent(receive).unwrap().name == "send inbox");
    }
}
