//! Unit tests of [`MemoryBus`]: redelivery after the visibility timeout,
//! extending a delivery, and the queue limit.

use super::*;
use crate::envelope::{MessageKind, Progress};

fn msg(n: u32) -> Envelope {
    let from = AgentId::new("t-1").unwrap();
    let mut e = Envelope::new(MessageKind::Progress, from, "x", &Progress::Started).unwrap();
    e.attempt = Some(n);
    e
}

#[tokio::test(start_paused = true)]
async fn an_unacked_message_comes_back_after_the_visibility_timeout() {
    let bus = MemoryBus::new(MemoryBusConfig {
        visibility_timeout: Duration::from_secs(10),
        max_deliveries: 2,
        ..MemoryBusConfig::default()
    });
    let me = AgentId::new("c-1").unwrap();
    let mut sub = bus.subscribe("t", "g", &me).await.unwrap();
    bus.publish("t", msg(1)).await.unwrap();
    let first = sub.next().await.unwrap();
    let started = Instant::now();
    let second = sub.next().await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(second.envelope.id, first.envelope.id);
    assert_eq!(second.delivery_count, 2);
    // A late ack of the first delivery does not remove the second.
    first.ack().await.unwrap();
    assert_eq!(bus.list("t").await.unwrap().len(), 0);
    tokio::time::advance(Duration::from_secs(11)).await;
    bus.publish("t", msg(2)).await.unwrap();
    let third = sub.next().await.unwrap();
    assert_eq!(third.envelope.attempt, Some(2));
    let dead = bus.list("t").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].deliveries, 2);
}

#[tokio::test(start_paused = true)]
async fn extend_keeps_a_message_invisible() {
    let bus = MemoryBus::new(MemoryBusConfig {
        visibility_timeout: Duration::from_secs(10),
        ..MemoryBusConfig::default()
    });
    let me = AgentId::new("c-1").unwrap();
    let mut sub = bus.subscribe("t", "g", &me).await.unwrap();
    bus.publish("t", msg(1)).await.unwrap();
    let d = sub.next().await.unwrap();
    tokio::time::advance(Duration::from_secs(8)).await;
    d.extend().await.unwrap();
    tokio::time::advance(Duration::from_secs(8)).await;
    let waited = tokio::time::timeout(Duration::from_secs(1), sub.next()).await;
    assert!(waited.is_err(), "redelivered while extended");
    d.ack().await.unwrap();
}

#[tokio::test]
async fn a_full_queue_refuses_more() {
    let bus = MemoryBus::new(MemoryBusConfig {
        max_queue_len: 2,
        ..MemoryBusConfig::default()
    });
    bus.publish("t", msg(1)).await.unwrap();
    bus.publish("t", msg(2)).await.unwrap();
    let err = bus.publish("t", msg(3)).await.unwrap_err();
    assert!(err.is_retryable());
    let me = AgentId::new("c-1").unwrap();
    let _sub = bus.subscribe("t", "g", &me).await.unwrap();
    assert_eq!(bus.queue_len("t", "g"), 2);
}
