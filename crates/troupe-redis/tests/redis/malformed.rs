//! Entries that are not envelopes (written by something else, or by a
//! future version) are set aside, never delivered, and never stop a consumer.

use std::time::Duration;

use tokio::time::timeout;
use troupe_core::AgentId;
use troupe_core::bus::{Bus, BusError, DeadLetters, Subscription};
use troupe_core::envelope::MessageKind;
use troupe_testkit::conformance::bus::sample_envelope;

use crate::support::{Env, topic};

async fn malformed(sub: &mut Box<dyn Subscription>) -> String {
    match timeout(Duration::from_secs(2), sub.next()).await {
        Ok(Err(BusError::Malformed { reason, .. })) => reason,
        other => panic!("expected a malformed message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_entry_is_set_aside_and_the_consumer_goes_on() {
    let Some(env) = Env::new("malformed").await else {
        return;
    };
    let bus = env.bus().await;
    let t = topic("malformed");
    let me = AgentId::new("c-1").unwrap();
    let mut sub = bus.subscribe(&t, "g", &me).await.unwrap();
    let mut raw = env.raw().await;
    let stream = env.stream(&t);
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("something")
        .arg("else")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("envelope")
        .arg(&b"{\"id\": not json \xff"[..])
        .query_async(&mut raw)
        .await
        .unwrap();
    let good = sample_envelope(1);
    bus.publish(&t, good.clone()).await.unwrap();

    let first = malformed(&mut sub).await;
    assert!(first.contains("no envelope field"), "{first}");
    let second = malformed(&mut sub).await;
    assert!(second.contains("not an envelope"), "{second}");
    let d = timeout(Duration::from_secs(2), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.envelope, good);
    d.ack().await.unwrap();

    let dead = bus.list(&t).await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for letter in &dead {
        assert_eq!(letter.group, "g");
        assert!(letter.reason.starts_with("malformed"), "{}", letter.reason);
        assert_eq!(letter.envelope.kind, MessageKind::Control);
        assert_eq!(letter.envelope.payload["malformed"], true);
    }
    assert!(
        dead[0].envelope.payload["raw"]
            .as_str()
            .unwrap()
            .contains("something"),
        "{:?}",
        dead[0].envelope.payload
    );
    // Listing twice shows the same stand-ins.
    let again = bus.list(&t).await.unwrap();
    assert_eq!(again, dead);
    // There is nothing to deliver in them: requeueing leaves them.
    assert_eq!(bus.requeue(&t, None).await.unwrap(), 0);
    assert_eq!(bus.list(&t).await.unwrap().len(), 2);
    env.cleanup().await;
}
