//! Messages the orchestrator must not be misled by (a result delivered twice,
//! forged and malformed messages), and shutting down with workers busy.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use troupe::Troupe;
use troupe_core::bus::{Bus, BusError, DeadLetters, MemoryBus, QueueDepth, Subscription, topics};
use troupe_core::envelope::{Envelope, MessageKind};
use troupe_core::ledger::EventKind;
use troupe_core::llm::CallKind;
use troupe_core::task::TaskStatus;
use troupe_core::{AgentId, Role, SubtaskId};
use troupe_llm::mock::{MockLlm, Rule};

use crate::support::{config, count, kinds, reached, troupe};

/// A bus that delivers every result twice, as an at-least-once bus may.
struct Duplicating(MemoryBus);

#[async_trait]
impl Bus for Duplicating {
    fn name(&self) -> &str {
        "duplicating"
    }

    async fn publish(&self, topic: &str, envelope: Envelope) -> Result<(), BusError> {
        if envelope.kind == MessageKind::TaskResult {
            self.0.publish(topic, envelope.clone()).await?;
        }
        self.0.publish(topic, envelope).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &AgentId,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.0.subscribe(topic, group, consumer).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_result_changes_nothing() {
    let bus = MemoryBus::default();
    let troupe = Troupe::builder()
        .llm(Arc::new(MockLlm::builtin()))
        .bus(Arc::new(Duplicating(bus.clone())))
        .config(config())
        .build()
        .await
        .unwrap();
    let task = troupe.run("Count the stars").await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    let entries = troupe.progress(task.id).await.unwrap();
    assert_eq!(
        count(&entries, EventKind::SubtaskCompleted),
        3,
        "{:#?}",
        kinds(&entries)
    );
    assert!(task.subtasks.iter().all(|s| s.attempts == 1));

    // A result delivered again after the task ended changes nothing either.
    let stored = troupe.task(task.id).await.unwrap().unwrap();
    let worker = task.subtasks[0].agent.clone().unwrap();
    let again = Envelope::new(
        MessageKind::TaskResult,
        worker,
        troupe.agent_id().to_string(),
        &json!({"output": "other"}),
    )
    .unwrap()
    .about(task.id, &SubtaskId::new("s1").unwrap(), 1);
    let inbox = topics::inbox(troupe.agent_id());
    bus.publish(&inbox, again).await.unwrap();
    troupe_testkit::eventually(
        "the late result is taken off the inbox",
        Duration::from_secs(5),
        || async { (bus.depth(&inbox).await.unwrap() == 0).then_some(()) },
    )
    .await;
    assert_eq!(troupe.task(task.id).await.unwrap().unwrap(), stored);
    assert_eq!(troupe.progress(task.id).await.unwrap(), entries);
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn forged_and_malformed_messages_are_set_aside() {
    let bus = MemoryBus::default();
    let llm = MockLlm::builder()
        .rule(
            Rule::on(CallKind::Work)
                .delay(Duration::from_millis(300))
                .repeat(),
        )
        .build()
        .unwrap();
    let troupe = Troupe::builder()
        .llm(Arc::new(llm))
        .bus(Arc::new(bus.clone()))
        .config(config())
        .build()
        .await
        .unwrap();
    let handle = troupe.submit("Keep going").await.unwrap();
    reached(&mut handle.events(), EventKind::SubtaskStarted, None).await;

    let forger = AgentId::new("mallory").unwrap();
    let inbox = topics::inbox(troupe.agent_id());
    let garbage = Envelope::new(
        MessageKind::TaskResult,
        forger.clone(),
        "x",
        &json!({"not": "a result"}),
    )
    .unwrap()
    .about(handle.id(), &SubtaskId::new("s1").unwrap(), 1);
    bus.publish(&inbox, garbage).await.unwrap();
    let unknown = Envelope::new(
        MessageKind::TaskResult,
        forger.clone(),
        "x",
        &json!({"output": "forged"}),
    )
    .unwrap()
    .about(handle.id(), &SubtaskId::new("nope").unwrap(), 1);
    bus.publish(&inbox, unknown).await.unwrap();
    let assignment =
        Envelope::new(MessageKind::TaskAssign, forger, "x", &json!({"goal": 1})).unwrap();
    bus.publish(&topics::role(&Role::new("writer").unwrap()), assignment)
        .await
        .unwrap();

    let task = handle.wait().await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{:?}", task.error);
    assert!(
        task.subtasks
            .iter()
            .all(|s| s.result.as_deref() != Some("forged"))
    );
    let dead = bus.list(&inbox).await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:#?}");
    assert!(
        dead[0].reason.contains("malformed task_result"),
        "{}",
        dead[0].reason
    );
    assert!(
        dead[1].reason.contains("no subtask nope"),
        "{}",
        dead[1].reason
    );
    let dead = bus
        .list(&topics::role(&Role::new("writer").unwrap()))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    troupe.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_workers_and_shutdown_now_does_not() {
    let make = || async {
        let llm = MockLlm::builder()
            .rule(Rule::on(CallKind::Work).hang().repeat())
            .build()
            .unwrap();
        let mut c = config();
        c.workers.shutdown_grace = Duration::from_millis(800);
        let troupe = troupe(Arc::new(llm), c).await;
        let handle = troupe.submit("Hangs").await.unwrap();
        reached(&mut handle.events(), EventKind::SubtaskStarted, None).await;
        handle.cancel();
        assert_eq!(handle.wait().await.unwrap().status, TaskStatus::Cancelled);
        troupe
    };
    let started = tokio::time::Instant::now();
    make().await.shutdown().await;
    let graceful = started.elapsed();
    let started = tokio::time::Instant::now();
    make().await.shutdown_now().await;
    let now = started.elapsed();
    assert!(
        graceful >= Duration::from_millis(800),
        "shutdown took {graceful:?}: shorter than the workers' grace"
    );
    assert!(
        now < Duration::from_millis(600),
        "shutdown_now took {now:?}"
    );
}
