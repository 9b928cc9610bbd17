//! Shared fixtures.

use std::sync::Arc;
use std::time::Duration;

use troupe::config::BackoffConfig;
use troupe::{Troupe, TroupeConfig};
use troupe_core::ledger::{EventKind, ProgressEntry};
use troupe_core::task::TaskRecord;
use troupe_llm::mock::MockLlm;

/// A configuration with quick retries, so that tests run fast.
pub(crate) fn config() -> TroupeConfig {
    let mut c = TroupeConfig::default();
    let quick = BackoffConfig {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
        multiplier: 2.0,
        jitter: 0.0,
    };
    c.orchestrator.retry = quick.clone();
    c.llm.retry = quick;
    c
}

/// A runtime on the in-memory bus and store with `llm`.
pub(crate) async fn troupe(llm: Arc<MockLlm>, config: TroupeConfig) -> Troupe {
    Troupe::builder()
        .llm(llm)
        .config(config)
        .build()
        .await
        .unwrap()
}

/// The step at which `event` happened for `subtask` (the first such entry).
pub(crate) fn step<'a>(
    entries: &'a [ProgressEntry],
    event: EventKind,
    subtask: &str,
) -> &'a ProgressEntry {
    entries
        .iter()
        .find(|e| e.event == event && e.subtask_id.as_ref().is_some_and(|s| s.as_str() == subtask))
        .unwrap_or_else(|| panic!("no {event} entry for {subtask} in {:#?}", kinds(entries)))
}

/// The events, in order, with their subtasks.
pub(crate) fn kinds(entries: &[ProgressEntry]) -> Vec<(EventKind, Option<String>)> {
    entries
        .iter()
        .map(|e| (e.event, e.subtask_id.as_ref().map(ToString::to_string)))
        .collect()
}

/// How many entries of `event` there are.
pub(crate) fn count(entries: &[ProgressEntry], event: EventKind) -> usize {
    entries.iter().filter(|e| e.event == event).count()
}

/// The result of subtask `id`.
pub(crate) fn result_of<'a>(task: &'a TaskRecord, id: &str) -> &'a str {
    task.subtasks
        .iter()
        .find(|s| s.id.as_str() == id)
        .and_then(|s| s.result.as_deref())
        .unwrap_or_default()
}

/// Follows `events` until an entry of `event` comes (for `subtask`, if
/// given), and returns it; panics if the task ends first.
pub(crate) async fn reached(
    events: &mut troupe::TaskEvents,
    event: EventKind,
    subtask: Option<&str>,
) -> ProgressEntry {
    use futures::StreamExt as _;
    while let Some(entry) = events.next().await {
        let entry = entry.unwrap();
        let about =
            subtask.is_none_or(|s| entry.subtask_id.as_ref().is_some_and(|i| i.as_str() == s));
        if entry.event == event && about {
            return entry;
        }
    }
    panic!("the task ended without a {event} entry");
}

/// Waits until `troupe`'s store has task `id` ended (whichever coordinator
/// ends it) and returns its ledger.
pub(crate) async fn ended(troupe: &Troupe, id: troupe_core::TaskId) -> TaskRecord {
    troupe_testkit::eventually("the task ends", Duration::from_secs(30), || async {
        let record = troupe.task(id).await.unwrap().unwrap();
        record.status.is_terminal().then_some(record)
    })
    .await
}

/// Checks that the task was taken over once, by `agent`, under lease epoch 2.
pub(crate) fn resumed_once_by(progress: &[ProgressEntry], agent: &str) {
    let resumed: Vec<_> = progress
        .iter()
        .filter(|e| e.event == EventKind::TaskResumed)
        .collect();
    assert_eq!(resumed.len(), 1, "{progress:#?}");
    assert_eq!(resumed[0].agent.as_str(), agent);
    assert!(
        resumed[0].detail.contains("lease epoch 2"),
        "{}",
        resumed[0].detail
    );
}
