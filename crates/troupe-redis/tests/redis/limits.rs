//! What the bus refuses: oversized messages, bad names, bad URLs.

use std::time::Duration;

use serde_json::json;
use troupe_core::AgentId;
use troupe_core::bus::{Bus, BusError};
use troupe_core::envelope::{Envelope, MessageKind};
use troupe_redis::{RedisBus, RedisBusConfig};
use troupe_testkit::conformance::bus::sample_envelope;

use crate::support::{Env, next_within, topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused() {
    let Some(env) = Env::new("oversized").await else {
        return;
    };
    let bus = env
        .bus_with(RedisBusConfig {
            max_message_bytes: 4096,
            ..env.config()
        })
        .await;
    let t = topic("oversized");
    let me = AgentId::new("c-1").unwrap();
    let mut sub = bus.subscribe(&t, "g", &me).await.unwrap();
    let big = Envelope::new(
        MessageKind::TaskResult,
        me.clone(),
        "x",
        &json!({"output": "x".repeat(5000)}),
    )
    .unwrap();
    let err = bus.publish(&t, big).await.unwrap_err();
    assert!(matches!(err, BusError::Invalid(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("4096"), "{err}");
    // Nothing was sent; a message under the limit still goes.
    let small = sample_envelope(1);
    bus.publish(&t, small.clone()).await.unwrap();
    let got = next_within(&mut sub, Duration::from_secs(2), "small").await;
    assert_eq!(got.envelope, small);
    got.ack().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_refused() {
    let Some(env) = Env::new("bad_names").await else {
        return;
    };
    let bus = env.bus().await;
    let me = AgentId::new("c-1").unwrap();
    for (topic, group) in [("", "g"), ("t", ""), ("t:dlq", "g")] {
        let err = bus.subscribe(topic, group, &me).await.err().unwrap();
        assert!(
            matches!(err, BusError::Invalid(_)),
            "{topic:?}/{group:?}: {err:?}"
        );
    }
    let err = bus.publish("t:dlq", sample_envelope(1)).await.unwrap_err();
    assert!(matches!(err, BusError::Invalid(_)), "{err:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn urls_other_than_redis_and_rediss_are_refused() {
    for url in ["http://127.0.0.1:6379", "127.0.0.1:6379", "redis//x"] {
        let err = RedisBus::connect(url, RedisBusConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::Invalid(_)), "{url}: {err:?}");
    }
}
