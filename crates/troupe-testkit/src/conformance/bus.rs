//! The [`Bus`] conformance suite. A bus's tests, one per check, each on a
//! fresh bus and the settings it was made with:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use troupe_core::bus::{Bus, MemoryBus, MemoryBusConfig};
//! use troupe_testkit::conformance::Fixture;
//! use troupe_testkit::conformance::bus::BusSuite;
//!
//! async fn memory(_check: &str) -> Option<Fixture<(BusSuite, Arc<dyn Bus>)>> {
//!     let suite = BusSuite { visibility_timeout: Duration::from_millis(300), max_deliveries: 3 };
//!     let config = MemoryBusConfig {
//!         visibility_timeout: suite.visibility_timeout,
//!         max_deliveries: suite.max_deliveries,
//!         ..MemoryBusConfig::default()
//!     };
//!     Some(Fixture::new((suite, Arc::new(MemoryBus::new(config)) as Arc<dyn Bus>)))
//! }
//!
//! troupe_testkit::bus_conformance!(memory);
//! # fn main() {}
//! ```

// A test suite: its assertions are meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::timeout;
use troupe_core::bus::{Bus, DeadLetters, Delivery, Subscription, WorkerInfo, WorkerRegistry};
use troupe_core::envelope::{Envelope, MessageKind};
use troupe_core::{AgentId, MessageId, SubtaskId, TaskId};

/// Expands to one `#[tokio::test]` per check of [`BusSuite`], each on the
/// `(suite, bus)` of the fixture that `$make(check_name)` returns.
#[macro_export]
macro_rules! bus_conformance {
    ($make:path) => {
        $crate::__conformance_tests!($make, |fixture| (
            fixture.subject.0,
            fixture.subject.1.clone(),
        );
            delivers_what_was_published,
            keeps_order_for_one_consumer,
            gives_every_group_every_message,
            shares_a_group_among_consumers,
            keeps_messages_published_before_any_group,
            redelivers_unacked_messages,
            redelivers_nacked_messages_soon,
            extends_visibility,
            dead_letters_after_max_deliveries,
            dead_letters_on_request,
            requeues_dead_letters,
            registers_workers,
        );
    };
}

/// The settings the bus under test was made with.
#[derive(Debug, Clone, Copy)]
pub struct BusSuite {
    /// Its visibility timeout (at least 100 ms, so that timings are clear).
    pub visibility_timeout: Duration,
    /// Deliveries after which it dead-letters a message.
    pub max_deliveries: u32,
}

fn topic(check: &str) -> String {
    format!("conformance.{check}.{}", MessageId::new())
}

/// The bus's dead letters, which the checks that use them require.
fn dead<'a>(bus: &'a Arc<dyn Bus>, check: &str) -> &'a dyn DeadLetters {
    bus.dead_letters()
        .unwrap_or_else(|| panic!("{check}: the {} bus offers no dead letters", bus.name()))
}

/// The bus's worker registry, which the checks that use it require.
fn registry<'a>(bus: &'a Arc<dyn Bus>, check: &str) -> &'a dyn WorkerRegistry {
    bus.worker_registry()
        .unwrap_or_else(|| panic!("{check}: the {} bus offers no worker registry", bus.name()))
}

fn consumer(n: u32) -> AgentId {
    AgentId::new(format!("consumer-{n}")).unwrap()
}

/// A message with every envelope field set.
pub fn sample_envelope(n: u32) -> Envelope {
    let mut e = Envelope::new(
        MessageKind::TaskResult,
        AgentId::new("sender-1").unwrap(),
        "role:writer",
        &json!({"output": format!("résultat n°{n} ✓"), "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
    )
    .unwrap()
    .about(TaskId::new(), &SubtaskId::new("s1").unwrap(), n);
    e.trace_context = BTreeMap::from([(
        "traceparent".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
    )]);
    e
}

impl BusSuite {
    /// Runs every check, each on a bus from `make`.
    pub async fn run<F, Fut>(&self, make: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Arc<dyn Bus>>,
    {
        self.delivers_what_was_published(make().await).await;
        self.keeps_order_for_one_consumer(make().await).await;
        self.gives_every_group_every_message(make().await).await;
        self.shares_a_group_among_consumers(make().await).await;
        self.keeps_messages_published_before_any_group(make().await)
            .await;
        self.redelivers_unacked_messages(make().await).await;
        self.redelivers_nacked_messages_soon(make().await).await;
        self.extends_visibility(make().await).await;
        self.dead_letters_after_max_deliveries(make().await).await;
        self.dead_letters_on_request(make().await).await;
        self.requeues_dead_letters(make().await).await;
        self.registers_workers(make().await).await;
    }

    async fn next(&self, sub: &mut Box<dyn Subscription>, check: &str) -> Delivery {
        let wait = self.visibility_timeout * 4 + Duration::from_secs(2);
        match timeout(wait, sub.next()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => panic!("{check}: receive failed: {e}"),
            Err(_) => panic!("{check}: nothing delivered within {wait:?}"),
        }
    }

    async fn nothing_within(&self, sub: &mut Box<dyn Subscription>, wait: Duration, check: &str) {
        if let Ok(got) = timeout(wait, sub.next()).await {
            panic!("{check}: expected no delivery within {wait:?}, got {got:?}");
        }
    }

    /// A message arrives whole, once, and stays gone once acked.
    pub async fn delivers_what_was_published(&self, bus: Arc<dyn Bus>) {
        let check = "delivers_what_was_published";
        let t = topic(check);
        let mut sub = bus.subscribe(&t, "g", &consumer(1)).await.unwrap();
        let sent = sample_envelope(1);
        bus.publish(&t, sent.clone()).await.unwrap();
        let got = self.next(&mut sub, check).await;
        assert_eq!(
            got.envelope, sent,
            "{check}: the envelope changed in transit"
        );
        assert_eq!(got.delivery_count, 1, "{check}");
        assert_eq!(&*got.topic, t.as_str(), "{check}");
        got.ack().await.unwrap();
        self.nothing_within(&mut sub, self.visibility_timeout * 2, check)
            .await;
    }

    /// One consumer sees messages in publication order.
    pub async fn keeps_order_for_one_consumer(&self, bus: Arc<dyn Bus>) {
        let check = "keeps_order_for_one_consumer";
        let t = topic(check);
        let mut sub = bus.subscribe(&t, "g", &consumer(1)).await.unwrap();
        for n in 0..10 {
            bus.publish(&t, sample_envelope(n)).await.unwrap();
        }
        for n in 0..10 {
            let d = self.next(&mut sub, check).await;
            assert_eq!(d.envelope.attempt, Some(n), "{check}: out of order");
            d.ack().await.unwrap();
        }
    }

    /// Each consumer group gets its own copy of every message.
    pub async fn gives_every_group_every_message(&self, bus: Arc<dyn Bus>) {
        let check = "gives_every_group_every_message";
        let t = topic(check);
        let mut a = bus.subscribe(&t, "group-a", &consumer(1)).await.unwrap();
        let mut b = bus.subscribe(&t, "group-b", &consumer(2)).await.unwrap();
        for n in 0..5 {
            bus.publish(&t, sample_envelope(n)).await.unwrap();
        }
        for sub in [&mut a, &mut b] {
            let mut seen = Vec::new();
            for _ in 0..5 {
                let d = self.next(sub, check).await;
                seen.push(d.envelope.attempt);
                d.ack().await.unwrap();
            }
            assert_eq!(seen, (0..5).map(Some).collect::<Vec<_>>(), "{check}");
        }
    }

    /// Consumers of one group split the messages: none is lost, none doubled.
    pub async fn shares_a_group_among_consumers(&self, bus: Arc<dyn Bus>) {
        let check = "shares_a_group_among_consumers";
        let t = topic(check);
        let subs = vec![
            bus.subscribe(&t, "g", &consumer(1)).await.unwrap(),
            bus.subscribe(&t, "g", &consumer(2)).await.unwrap(),
        ];
        let total = 40;
        for n in 0..total {
            bus.publish(&t, sample_envelope(n)).await.unwrap();
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for mut sub in subs {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(Ok(d)) = timeout(Duration::from_millis(500), sub.next()).await {
                    d.ack().await.unwrap();
                    tx.send(d.envelope.id).unwrap();
                }
            }));
        }
        drop(tx);
        let mut ids = Vec::new();
        while let Some(id) = rx.recv().await {
            ids.push(id);
        }
        for task in tasks {
            task.await.unwrap();
        }
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(
            ids.len(),
            total as usize,
            "{check}: got {} deliveries",
            ids.len()
        );
        assert_eq!(
            unique.len(),
            total as usize,
            "{check}: a message was delivered twice"
        );
    }

    /// Messages published before any group exists go to the first group.
    pub async fn keeps_messages_published_before_any_group(&self, bus: Arc<dyn Bus>) {
        let check = "keeps_messages_published_before_any_group";
        let t = topic(check);
        for n in 0..3 {
            bus.publish(&t, sample_envelope(n)).await.unwrap();
        }
        let mut sub = bus.subscribe(&t, "g", &consumer(1)).await.unwrap();
        for n in 0..3 {
            let d = self.next(&mut sub, check).await;
            assert_eq!(d.envelope.attempt, Some(n), "{check}");
            d.ack().await.unwrap();
        }
    }

    /// A delivery not acked within the visibility timeout goes to another consumer.
    pub async fn redelivers_unacked_messages(&self, bus: Arc<dyn Bus>) {
        let check = "redelivers_unacked_messages";
        let t = topic(check);
        let mut first = bus.subscribe(&t, "g", &consumer(1)).await.unwrap();
        let mut second = bus.subscribe(&t, "g", &consumer(2)).await.unwrap();
        bus.publish(&t, sample_envelope(1)).await.unwrap();
        let lost = self.next(&mut first, check).await;
        let started = tokio::time::Instant::now();
        let again = self.next(&mut second, check).await;
        assert!(
            started.elapsed() >= self.visibility_timeout / 2,
            "{check}: redelivered after {:?}, before the visibility timeout",
            started.elapsed()
        );
        assert_eq!(again.envelope.id, lost.envelope.id, "{check}");
        assert_eq!(again.delivery_count, 2, "{check}");
        again.ack().await.unwrap();
        self.nothing_within(&mut second, self.visibility_timeout * 2, check)
            .await;
    }

    /// A nacked message comes back well before the visibility timeout.
    pub async fn redelivers_nacked_messages_soon(&self, bus: Arc<dyn Bus>) {
        let check = "redelivers_nacked_messages_soon";
        let t = topic(check);
        let mut sub = bus.subscribe(&t, "g", &consumer(1)).await.unwrap();
        bus.publish(&t, sample_envelope(1)).await.unwrap();
        let d = self.next(&mut sub, check).await;
        d.nack().await.unwrap();
        let again = timeout(self.visibility_timeout / 2, sub.next())
            .await
            .unwrap_or_else(|_| panic!("{check}: a nacked message was not redelivered promptly"))
            .unwrap();
        assert_eq!(again.envelope.id, d.envelope.id, "{check}");
        assert_eq!(again.delivery_count, 2, "{check}");
        again.ack().await.unwrap();
    }

    /// Extending a delivery keeps it from being redelivered.
    pub async fn extends_visibility(&self, bus: Arc<dyn Bus>) {
        let check = "extends_visibility";
        let t = topic(check);
        let mut sub = bus.subscribe(&t, "g", &consumer(1)).await.unwrap();
        let mut other = bus.subscribe(&t, "g", &consumer(2)).await.unwrap();
        bus.publish(&t, sample_envelope(1)).await.unwrap();
        let d = self.next(&mut sub, check).await;
        let step = self.visibility_timeout * 6 / 10;
        for _ in 0..3 {
            tokio::time::sleep(step).await;
            d.extend().await.unwrap();
        }
        self.nothing_within(&mut other, step, check).await;
        d.ack().await.unwrap();
    }

    /// A message nacked `max_deliveries` times lands in the dead letters.
    pub async fn dead_letters_after_max_deliveries(&self, bus: Arc<dyn Bus>) {
        let check = "dead_letters_after_max_deliveries";
        let t = topic(check);
        let mut sub = bus.subscribe(&t, "g", &consumer(1)).await.unwrap();
        let sent = sample_envelope(1);
        bus.publish(&t, sent.clone()).await.unwrap();
        for n in 1..=self.max_deliveries {
            let d = self.next(&mut sub, check).await;
            assert_eq!(d.delivery_count, n, "{check}");
            d.nack().await.unwrap();
        }
        self.nothing_within(&mut sub, self.visibility_timeout * 2, check)
            .await;
        let dead = dead(&bus, check).list(&t).await.unwrap();
        assert_eq!(dead.len(), 1, "{check}: {dead:?}");
        assert_eq!(dead[0].envelope, sent, "{check}");
        assert_eq!(dead[0].deliveries, self.max_deliveries, "{check}");
    }

    /// A consumer can set a message aside with a reason.
    pub async fn dead_letters_on_request(&self, bus: Arc<dyn Bus>) {
        let check = "dead_letters_on_request";
        let t = topic(check);
        let mut sub = bus.subscribe(&t, "g", &consumer(1)).await.unwrap();
        bus.publish(&t, sample_envelope(1)).await.unwrap();
        let d = self.next(&mut sub, check).await;
        d.dead_letter("payload is not a task_assign").await.unwrap();
        self.nothing_within(&mut sub, self.visibility_timeout * 2, check)
            .await;
        let dead = dead(&bus, check).list(&t).await.unwrap();
        assert_eq!(dead.len(), 1, "{check}");
        assert!(
            dead[0].reason.contains("not a task_assign"),
            "{check}: {}",
            dead[0].reason
        );
        assert_eq!(dead[0].group, "g", "{check}");
    }

    /// Dead letters go back on their topic, for their group only, named or all.
    pub async fn requeues_dead_letters(&self, bus: Arc<dyn Bus>) {
        let check = "requeues_dead_letters";
        let t = topic(check);
        let mut sub = bus.subscribe(&t, "g", &consumer(1)).await.unwrap();
        let mut other = bus.subscribe(&t, "other", &consumer(2)).await.unwrap();
        let sent: Vec<Envelope> = (0..3).map(sample_envelope).collect();
        for e in &sent {
            bus.publish(&t, e.clone()).await.unwrap();
        }
        for e in &sent {
            let d = self.next(&mut other, check).await;
            assert_eq!(d.envelope.id, e.id, "{check}");
            d.ack().await.unwrap();
            let d = self.next(&mut sub, check).await;
            assert_eq!(d.envelope.id, e.id, "{check}");
            d.dead_letter("cannot handle it yet").await.unwrap();
        }
        assert_eq!(
            dead(&bus, check).list(&t).await.unwrap().len(),
            3,
            "{check}"
        );

        let unknown = [MessageId::new()];
        let n = dead(&bus, check).requeue(&t, Some(&unknown)).await.unwrap();
        assert_eq!(n, 0, "{check}: requeued a dead letter nobody named");

        let n = dead(&bus, check)
            .requeue(&t, Some(&[sent[1].id]))
            .await
            .unwrap();
        assert_eq!(n, 1, "{check}: requeueing one by id");
        let d = self.next(&mut sub, check).await;
        assert_eq!(d.envelope, sent[1], "{check}: the requeued message changed");
        assert_eq!(
            d.delivery_count, 1,
            "{check}: a requeued message starts afresh"
        );
        d.ack().await.unwrap();
        let left = dead(&bus, check).list(&t).await.unwrap();
        let left: Vec<_> = left.iter().map(|l| l.envelope.id).collect();
        assert_eq!(
            left,
            vec![sent[0].id, sent[2].id],
            "{check}: dead letters left"
        );

        let n = dead(&bus, check).requeue(&t, None).await.unwrap();
        assert_eq!(n, 2, "{check}: requeueing all");
        for e in [&sent[0], &sent[2]] {
            let d = self.next(&mut sub, check).await;
            assert_eq!(d.envelope.id, e.id, "{check}: requeued out of order");
            d.ack().await.unwrap();
        }
        assert!(
            dead(&bus, check).list(&t).await.unwrap().is_empty(),
            "{check}"
        );
        assert_eq!(
            dead(&bus, check).requeue(&t, None).await.unwrap(),
            0,
            "{check}"
        );
        // The group that had handled them does not see them again.
        self.nothing_within(&mut other, self.visibility_timeout * 2, check)
            .await;
    }

    /// Heartbeats register a worker, refresh it in place, and expire.
    pub async fn registers_workers(&self, bus: Arc<dyn Bus>) {
        let check = "registers_workers";
        let ttl = self.visibility_timeout;
        let short = AgentId::new(format!("worker-{}", MessageId::new())).unwrap();
        let long = AgentId::new(format!("worker-{}", MessageId::new())).unwrap();
        let mine = |workers: Vec<WorkerInfo>| -> Vec<WorkerInfo> {
            workers
                .into_iter()
                .filter(|w| w.agent == short || w.agent == long)
                .collect()
        };
        let mut a = WorkerInfo::new(short.clone(), "writer", 4, "host-a");
        let b = WorkerInfo::new(long.clone(), "researcher", 2, "host-b");
        registry(&bus, check).heartbeat(&a, ttl).await.unwrap();
        registry(&bus, check).heartbeat(&b, ttl * 20).await.unwrap();
        let mut expected = vec![a.clone(), b.clone()];
        expected.sort_by(|x, y| x.agent.cmp(&y.agent));
        assert_eq!(
            mine(registry(&bus, check).workers().await.unwrap()),
            expected,
            "{check}"
        );

        a.busy = 3;
        a.last_seen = troupe_core::time::now();
        registry(&bus, check).heartbeat(&a, ttl).await.unwrap();
        let listed = mine(registry(&bus, check).workers().await.unwrap());
        assert_eq!(
            listed.len(),
            2,
            "{check}: a refresh added an entry: {listed:?}"
        );
        assert!(listed.contains(&a), "{check}: the refresh was not kept");

        tokio::time::sleep(ttl * 2).await;
        let listed = mine(registry(&bus, check).workers().await.unwrap());
        assert_eq!(
            listed,
            vec![b],
            "{check}: an expired worker is still listed"
        );
    }
}
