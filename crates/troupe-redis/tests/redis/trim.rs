//! Trimming frees what every group acked and never what a group still needs.

use std::time::Duration;

use troupe_core::AgentId;
use troupe_core::bus::Bus;
use troupe_core::envelope::Envelope;
use troupe_redis::RedisBusConfig;
use troupe_testkit::conformance::bus::sample_envelope;

use crate::support::{Env, next_within, topic};

async fn len(env: &Env, t: &str) -> u64 {
    let mut raw = env.raw().await;
    redis::cmd("XLEN")
        .arg(env.stream(t))
        .query_async(&mut raw)
        .await
        .unwrap()
}

/// The `attempt` of the envelope in the stream's first entry.
async fn first_attempt(env: &Env, t: &str) -> u32 {
    let mut raw = env.raw().await;
    let first: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(env.stream(t))
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut raw)
        .await
        .unwrap();
    let (_, fields) = &first[0];
    let envelope: Envelope = serde_json::from_str(&fields[0].1).unwrap();
    envelope.attempt.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_keeps_every_entry_a_group_still_needs() {
    let Some(env) = Env::new("trim").await else {
        return;
    };
    // Long enough that the held delivery is not reclaimed during the test.
    let bus = env
        .bus_with(RedisBusConfig {
            visibility_timeout: Duration::from_secs(30),
            ..env.config()
        })
        .await;
    let t = topic("trim");
    let total = 350;
    // Before any group: nothing may go.
    for n in 0..total {
        bus.publish(&t, sample_envelope(n)).await.unwrap();
    }
    assert_eq!(bus.trim(&t).await.unwrap(), 0);
    assert_eq!(len(&env, &t).await, u64::from(total));

    let mut fast = bus
        .subscribe(&t, "fast", &AgentId::new("c-1").unwrap())
        .await
        .unwrap();
    let mut slow = bus
        .subscribe(&t, "slow", &AgentId::new("c-2").unwrap())
        .await
        .unwrap();
    // Group "slow" came after the messages, so only "fast" gets these; it
    // acks all but holds the 10th pending.
    let mut held = None;
    for n in 0..total {
        let d = next_within(&mut fast, Duration::from_secs(2), "fast").await;
        if n == 10 {
            held = Some(d);
        } else {
            d.ack().await.unwrap();
        }
    }
    let removed = bus.trim(&t).await.unwrap();
    assert!(removed <= 10, "removed {removed}");
    assert_eq!(len(&env, &t).await, u64::from(total) - removed);
    let first = first_attempt(&env, &t).await;
    assert!(
        first <= 10,
        "trimmed past the pending entry: the first left is {first}"
    );

    held.unwrap().ack().await.unwrap();
    // A new message "slow" has not read yet bounds the trim from now on.
    bus.publish(&t, sample_envelope(1000)).await.unwrap();
    let before = len(&env, &t).await;
    let removed = bus.trim(&t).await.unwrap();
    assert!(removed >= 100, "removed {removed}");
    assert_eq!(len(&env, &t).await, before - removed);
    let d = next_within(&mut slow, Duration::from_secs(2), "slow").await;
    assert_eq!(d.envelope.attempt, Some(1000));
    d.ack().await.unwrap();
    let d = next_within(&mut fast, Duration::from_secs(2), "fast, last").await;
    assert_eq!(d.envelope.attempt, Some(1000));
    d.ack().await.unwrap();
    env.cleanup().await;
}

/// The names of `group`'s consumers.
async fn consumers(env: &Env, t: &str, group: &str) -> Vec<String> {
    let mut raw = env.raw().await;
    let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(env.stream(t))
        .arg(group)
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut names: Vec<String> = reply.consumers.into_iter().map(|c| c.name).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_gone_for_good_are_forgotten_unless_they_hold_messages() {
    let Some(env) = Env::new("forget_consumers").await else {
        return;
    };
    let bus = env
        .bus_with(RedisBusConfig {
            visibility_timeout: Duration::from_secs(30),
            block: Duration::from_millis(100),
            forget_consumers_after: Duration::from_millis(300),
            ..env.config()
        })
        .await;
    let t = topic("forget");
    let mut done = bus
        .subscribe(&t, "g", &AgentId::new("done-1").unwrap())
        .await
        .unwrap();
    let mut holding = bus
        .subscribe(&t, "g", &AgentId::new("holding-1").unwrap())
        .await
        .unwrap();
    bus.publish(&t, sample_envelope(1)).await.unwrap();
    bus.publish(&t, sample_envelope(2)).await.unwrap();
    next_within(&mut done, Duration::from_secs(2), "done")
        .await
        .ack()
        .await
        .unwrap();
    let held = next_within(&mut holding, Duration::from_secs(2), "holding").await;
    drop(done);
    drop(holding);
    assert_eq!(consumers(&env, &t, "g").await, ["done-1", "holding-1"]);
    // Once idle past forget_consumers_after (Redis's clock), a trim forgets
    // the one with nothing pending; the one still holding a message stays,
    // so the message can be reclaimed.
    troupe_testkit::eventually(
        "the idle consumer is forgotten",
        Duration::from_secs(10),
        || async {
            bus.trim(&t).await.unwrap();
            let left = consumers(&env, &t, "g").await;
            (left.len() == 1).then_some(())
        },
    )
    .await;
    assert_eq!(consumers(&env, &t, "g").await, ["holding-1"]);
    drop(held);
    env.cleanup().await;
}
