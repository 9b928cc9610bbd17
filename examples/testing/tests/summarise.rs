//! Tests of the summary workflow with a scripted mock LLM: each test decides
//! what "the model" answers (`Rule`s), records the calls, and asserts on
//! what a user sees (the summary, or the error) and on what was sent.
//!
//! Whole runs use real time on a multi-thread runtime; the LLM retry delay is
//! made short instead of slept through.

use std::sync::Arc;
use std::time::Duration;

use example_testing::{summarise, summariser};
use serde_json::{Value, json};
use troupe::TroupeConfig;
use troupe::config::BackoffConfig;
use troupe::core::llm::CallKind;
use troupe_llm::mock::{MockError, MockLlm, RecordedCall, Rule};

const TEXT: &str = "Tea is brewed from leaves. Coffee is brewed from beans.";

/// The plan a good model would make: count first, then write.
fn plan() -> Value {
    json!({
        "subtasks": [
            {"id": "count", "role": "counter", "instruction": "Count the words and sentences."},
            {"id": "summary", "role": "writer", "instruction": "Summarise the text in one sentence.",
             "depends_on": ["count"]}
        ]
    })
}

/// The defaults, with LLM retries 10 ms apart.
fn quick() -> TroupeConfig {
    let mut config = TroupeConfig::default();
    config.llm.retry = BackoffConfig {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(10),
        multiplier: 1.0,
        jitter: 0.0,
    };
    config
}

/// The recorded calls of `kind`.
fn calls_of(llm: &MockLlm, kind: CallKind) -> Vec<RecordedCall> {
    llm.calls()
        .into_iter()
        .filter(|c| c.meta().kind == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_is_the_writers_answer_built_on_the_count() {
    let llm = Arc::new(
        MockLlm::builder()
            .rule(Rule::on(CallKind::Plan).plan(plan()))
            .rule(
                Rule::on(CallKind::Work)
                    .role("writer")
                    .reply("Tea and coffee are both brewed."),
            )
            .record()
            .build()
            .unwrap(),
    );
    let troupe = summariser(llm.clone(), quick()).await.unwrap();
    let summary = summarise(&troupe, TEXT).await.unwrap();
    troupe.shutdown().await;

    assert!(
        summary.contains("Tea and coffee are both brewed."),
        "{summary}"
    );
    // The planner was given the text; the writer was given the counter's result.
    let planned = calls_of(&llm, CallKind::Plan);
    assert_eq!(planned.len(), 1);
    assert!(
        planned[0]
            .request
            .last_user_message()
            .unwrap()
            .contains(TEXT)
    );
    let work = calls_of(&llm, CallKind::Work);
    assert_eq!(work.len(), 1, "the counter makes no LLM call");
    let prompt = work[0].request.last_user_message().unwrap();
    assert!(prompt.contains("10 words in 2 sentences"), "{prompt}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_from_the_provider_is_retried() {
    let llm = Arc::new(
        MockLlm::builder()
            .rule(Rule::on(CallKind::Plan).plan(plan()))
            .rule(
                Rule::on(CallKind::Work)
                    .role("writer")
                    .error(MockError::http(503))
                    .times(1),
            )
            .record()
            .build()
            .unwrap(),
    );
    let troupe = summariser(llm.clone(), quick()).await.unwrap();
    let summary = summarise(&troupe, TEXT).await;
    troupe.shutdown().await;

    assert!(summary.is_ok(), "{summary:?}");
    // Once refused, then the built-in reply of the mock.
    let outcomes: Vec<_> = calls_of(&llm, CallKind::Work)
        .into_iter()
        .map(|c| c.outcome.map(|_| "answered"))
        .collect();
    assert_eq!(outcomes, [Err("server"), Ok("answered")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_cannot_plan_fails_the_summary() {
    let llm = Arc::new(
        MockLlm::builder()
            .rule(
                Rule::on(CallKind::Plan)
                    .reply("Sorry, I cannot help.")
                    .repeat(),
            )
            .record()
            .build()
            .unwrap(),
    );
    let troupe = summariser(llm.clone(), quick()).await.unwrap();
    let err = summarise(&troupe, TEXT).await.unwrap_err();
    troupe.shutdown().await;

    assert!(err.to_string().contains("the summary failed"), "{err}");
    // Asked again, with what was wrong, before giving up; no worker ran.
    assert!(calls_of(&llm, CallKind::Plan).len() > 1);
    assert!(calls_of(&llm, CallKind::Work).is_empty());
}
