//! Redis going away: a deleted stream, a Redis that restarts empty, one
//! that cannot be reached.

use std::time::Duration;

use troupe_core::AgentId;
use troupe_core::bus::{Bus, BusError, DeadLetters};
use troupe_redis::{RedisBus, RedisBusConfig};
use troupe_testkit::conformance::bus::sample_envelope;

use troupe_testkit::services::LocalRedis;

use crate::support::{Env, next_within, topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_and_group_are_recreated() {
    let Some(env) = Env::new("nogroup").await else {
        return;
    };
    let bus = env.bus().await;
    let t = topic("nogroup");
    let me = AgentId::new("c-1").unwrap();
    let mut sub = bus.subscribe(&t, "g", &me).await.unwrap();
    bus.publish(&t, sample_envelope(1)).await.unwrap();
    let d = next_within(&mut sub, Duration::from_secs(2), "before").await;
    d.ack().await.unwrap();

    // The stream goes, with its group (as in a Redis restart without persistence).
    let mut raw = env.raw().await;
    let _: i64 = redis::cmd("DEL")
        .arg(env.stream(&t))
        .query_async(&mut raw)
        .await
        .unwrap();
    let sent = sample_envelope(2);
    bus.publish(&t, sent.clone()).await.unwrap();
    let d = next_within(&mut sub, Duration::from_secs(5), "after the DEL").await;
    assert_eq!(d.envelope, sent);
    assert_eq!(d.delivery_count, 1);
    d.ack().await.unwrap();

    // Deleted while a delivery is out: settling it is harmless.
    bus.publish(&t, sample_envelope(3)).await.unwrap();
    let out = next_within(&mut sub, Duration::from_secs(2), "third").await;
    let _: i64 = redis::cmd("DEL")
        .arg(env.stream(&t))
        .query_async(&mut raw)
        .await
        .unwrap();
    out.extend().await.unwrap();
    out.nack().await.unwrap();
    out.ack().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_survives_a_redis_restart_without_persistence() {
    let Some(server) = LocalRedis::start("redis_restart") else {
        return;
    };
    let config = RedisBusConfig {
        visibility_timeout: Duration::from_millis(300),
        // Long, so that a publish that waited for it instead of failing at
        // once would overrun the test's own bound by far.
        command_timeout: Duration::from_secs(600),
        ..RedisBusConfig::default()
    };
    let bus = RedisBus::connect(&server.url(), config).await.unwrap();
    let t = topic("restart");
    let me = AgentId::new("c-1").unwrap();
    let mut sub = bus.subscribe(&t, "g", &me).await.unwrap();
    bus.publish(&t, sample_envelope(1)).await.unwrap();
    next_within(&mut sub, Duration::from_secs(2), "before")
        .await
        .ack()
        .await
        .unwrap();

    server.kill();
    let err = tokio::time::timeout(Duration::from_secs(60), bus.publish(&t, sample_envelope(2)))
        .await
        .expect("a publish to a dead Redis fails at once, not after the command timeout")
        .unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());

    // A consumer waits through the outage instead of failing.
    let receiver = tokio::spawn(async move {
        let got = next_within(&mut sub, Duration::from_secs(30), "after the restart").await;
        got.ack().await.unwrap();
        got.envelope
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !receiver.is_finished(),
        "the subscription ended during the outage"
    );

    tokio::task::block_in_place(|| server.restart());
    let sent = sample_envelope(3);
    troupe_testkit::eventually(
        "a publish after the restart",
        Duration::from_secs(10),
        || async {
            match bus.publish(&t, sent.clone()).await {
                Ok(()) => Some(()),
                Err(e) if e.is_retryable() => None,
                Err(e) => panic!("publish after the restart: {e}"),
            }
        },
    )
    .await;
    assert_eq!(receiver.await.unwrap(), sent);
    assert_eq!(bus.list(&t).await.unwrap(), vec![]);
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Nothing listens there now.
    let err = RedisBus::connect(
        &format!("redis://127.0.0.1:{port}"),
        RedisBusConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}
