//! Redelivery on Redis: dead consumers, dropped receives, nacks that must
//! wake a waiting consumer, late acks, and timeouts that end in the dead letters.

use std::time::{Duration, Instant};

use troupe_core::AgentId;
use troupe_core::bus::{Bus, DeadLetters, QueueDepth};
use troupe_redis::{RedisBus, RedisBusConfig};
use troupe_testkit::conformance::bus::sample_envelope;
use troupe_testkit::services::LocalRedis;

use crate::support::{Env, next_within, nothing_within, raw, topic};

fn consumer(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_message_goes_to_another_after_the_visibility_timeout() {
    let Some(env) = Env::new("dead_consumer").await else {
        return;
    };
    let bus = env.bus().await;
    let vt = bus.config().visibility_timeout;
    let t = topic("dead-consumer");
    let mut dying = bus.subscribe(&t, "g", &consumer("dying-1")).await.unwrap();
    let mut survivor = bus
        .subscribe(&t, "g", &consumer("survivor-1"))
        .await
        .unwrap();
    let sent = sample_envelope(1);
    bus.publish(&t, sent.clone()).await.unwrap();

    let first = next_within(&mut dying, Duration::from_secs(2), "first delivery").await;
    assert_eq!(first.delivery_count, 1);
    // The consumer dies: its delivery and subscription go without an ack.
    drop(first);
    drop(dying);
    let died = Instant::now();

    let again = next_within(&mut survivor, vt * 4, "redelivery").await;
    assert!(
        died.elapsed() >= vt,
        "redelivered after {:?}",
        died.elapsed()
    );
    assert_eq!(again.envelope, sent);
    assert_eq!(again.delivery_count, 2);
    again.ack().await.unwrap();
    nothing_within(&mut survivor, vt * 2, "after the ack").await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_receive_loses_nothing() {
    let Some(env) = Env::new("dropped_receive").await else {
        return;
    };
    // A long visibility timeout, so a message that waited for it would show.
    let bus = env
        .bus_with(RedisBusConfig {
            visibility_timeout: Duration::from_secs(30),
            block: Duration::from_secs(2),
            ..env.config()
        })
        .await;
    let t = topic("dropped-receive");
    let mut sub = bus.subscribe(&t, "g", &consumer("c-1")).await.unwrap();
    // Receive, and give up while Redis still blocks on the read...
    let gave_up = tokio::time::timeout(Duration::from_millis(100), sub.next()).await;
    assert!(gave_up.is_err());
    // ...so that the abandoned read is what takes this message.
    let sent = sample_envelope(7);
    bus.publish(&t, sent.clone()).await.unwrap();
    let got = next_within(&mut sub, Duration::from_secs(5), "after a dropped receive").await;
    assert_eq!(got.envelope, sent);
    // The abandoned read was a delivery too.
    assert!(got.delivery_count <= 2, "{}", got.delivery_count);
    got.ack().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_message_reaches_a_waiting_consumer_at_once() {
    // A Redis of its own, so that the only blocked reader is this test's.
    let Some(server) = LocalRedis::start("nack_wakes") else {
        return;
    };
    let config = RedisBusConfig {
        // Long: a waiter that slept through its read instead of being woken
        // by the nack would overrun its own bound by far.
        block: Duration::from_secs(600),
        visibility_timeout: Duration::from_secs(1200),
        ..RedisBusConfig::default()
    };
    let bus = RedisBus::connect(&server.url(), config).await.unwrap();
    let t = topic("nack-wakes");
    let mut first = bus.subscribe(&t, "g", &consumer("c-1")).await.unwrap();
    let mut waiting = bus.subscribe(&t, "g", &consumer("c-2")).await.unwrap();
    bus.publish(&t, sample_envelope(1)).await.unwrap();
    let d = next_within(&mut first, Duration::from_secs(2), "first delivery").await;
    let waiter = tokio::spawn(async move {
        next_within(&mut waiting, Duration::from_secs(60), "after the nack").await
    });
    // The second consumer blocks in its read.
    let raw = raw(&server.url()).await;
    troupe_testkit::eventually(
        "the other consumer blocks in XREADGROUP",
        Duration::from_secs(10),
        || async {
            let mut raw = raw.clone();
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut raw)
                .await
                .unwrap();
            clients
                .lines()
                .any(|c| c.contains("cmd=xreadgroup") && c.contains("flags=b"))
                .then_some(())
        },
    )
    .await;
    d.nack().await.unwrap();
    let got = waiter.await.unwrap();
    assert_eq!(got.envelope.id, d.envelope.id);
    assert_eq!(got.delivery_count, 2);
    got.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_ack_does_not_remove_a_redelivered_message() {
    let Some(env) = Env::new("late_ack").await else {
        return;
    };
    let bus = env.bus().await;
    let vt = bus.config().visibility_timeout;
    let t = topic("late-ack");
    let mut slow = bus.subscribe(&t, "g", &consumer("slow-1")).await.unwrap();
    let mut other = bus.subscribe(&t, "g", &consumer("other-1")).await.unwrap();
    bus.publish(&t, sample_envelope(1)).await.unwrap();
    let late = next_within(&mut slow, Duration::from_secs(2), "first").await;
    let second = next_within(&mut other, vt * 4, "redelivery").await;
    assert_eq!(second.delivery_count, 2);
    // The first consumer finishes late: its ack and extend do nothing.
    late.extend().await.unwrap();
    late.ack().await.unwrap();
    // The second delivery is still live: giving it back brings it back.
    second.nack().await.unwrap();
    let third = next_within(&mut other, Duration::from_secs(2), "after the nack").await;
    assert_eq!(third.envelope.id, late.envelope.id);
    assert_eq!(third.delivery_count, 3);
    third.ack().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_that_keep_timing_out_end_in_the_dead_letters() {
    let Some(env) = Env::new("timeouts_to_dlq").await else {
        return;
    };
    let bus = env.bus().await;
    let config = bus.config().clone();
    let t = topic("timeouts");
    let mut sub = bus.subscribe(&t, "g", &consumer("c-1")).await.unwrap();
    let sent = sample_envelope(1);
    bus.publish(&t, sent.clone()).await.unwrap();
    for n in 1..=config.max_deliveries {
        let d = next_within(&mut sub, config.visibility_timeout * 4, "delivery").await;
        assert_eq!(d.delivery_count, n);
        // Never acked: it times out.
    }
    nothing_within(&mut sub, config.visibility_timeout * 3, "after the last").await;
    let dead = bus.list(&t).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].envelope, sent);
    assert_eq!(dead[0].deliveries, config.max_deliveries);
    assert_eq!(dead[0].group, "g");
    assert!(
        dead[0].reason.contains("visibility timeout"),
        "{}",
        dead[0].reason
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_back_under_its_name_gets_its_pending_messages_at_once() {
    let Some(env) = Env::new("same_name").await else {
        return;
    };
    let bus = env
        .bus_with(RedisBusConfig {
            visibility_timeout: Duration::from_secs(30),
            ..env.config()
        })
        .await;
    let t = topic("same-name");
    let mut before = bus.subscribe(&t, "g", &consumer("worker-1")).await.unwrap();
    bus.publish(&t, sample_envelope(1)).await.unwrap();
    let lost = next_within(&mut before, Duration::from_secs(2), "before").await;
    drop(lost);
    drop(before);
    // The same worker, restarted, does not wait 30 s for its own message.
    let mut after = bus.subscribe(&t, "g", &consumer("worker-1")).await.unwrap();
    let got = next_within(&mut after, Duration::from_secs(2), "after").await;
    assert_eq!(got.delivery_count, 2);
    got.ack().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_counts_what_waits_in_every_group() {
    let Some(env) = Env::new("depth").await else {
        return;
    };
    let bus = env.bus().await;
    let t = topic("depth");
    assert_eq!(bus.depth(&t).await.unwrap(), 0);
    for n in 0..3 {
        bus.publish(&t, sample_envelope(n)).await.unwrap();
    }
    assert_eq!(bus.depth(&t).await.unwrap(), 3, "before any group");
    let mut a = bus.subscribe(&t, "a", &consumer("c-1")).await.unwrap();
    let _b = bus.subscribe(&t, "b", &consumer("c-2")).await.unwrap();
    // Group b came later: it waits for what is published from now on.
    assert_eq!(bus.depth(&t).await.unwrap(), 3);
    let d = next_within(&mut a, Duration::from_secs(2), "a").await;
    d.ack().await.unwrap();
    assert_eq!(bus.depth(&t).await.unwrap(), 2);
    bus.publish(&t, sample_envelope(9)).await.unwrap();
    assert_eq!(bus.depth(&t).await.unwrap(), 4, "one more in each group");
    env.cleanup().await;
}
