//! Publish-to-receive latency of the Redis bus on a local Redis.
//!
//! `cargo bench -p troupe-redis --bench latency` (Redis at
//! `TROUPE_TEST_REDIS_URL`, else 127.0.0.1:6379; skipped when none answers).
//! Criterion times `publish` alone and a whole `publish -> next -> ack`
//! round trip through one consumer (a throughput figure: there the consumer
//! calls `next` only after the publish returned, so nothing waits in a read).
//!
//! Delivery latency is then measured as a user sees it: a consumer task
//! waits in `next` (its blocking `XREADGROUP` already sent), and another
//! task publishes one message at a time, each after the previous one was
//! acked and a pause of about a millisecond (the consumer is back in its
//! read); publish-to-receive is the time from just before `publish` to
//! `next` returning the message. Its percentiles are printed at the end
//! (criterion reports means and medians, not tails), with those of
//! `publish` alone for comparison. Keys go under a random prefix and are
//! deleted afterwards.

// A benchmark binary: it reports on stdout and gives up loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use criterion::{Criterion, criterion_group, criterion_main};
use troupe_core::AgentId;
use troupe_core::bus::Bus;
use troupe_redis::{RedisBus, RedisBusConfig};
use troupe_testkit::conformance::bus::sample_envelope;

/// Messages whose delivery latency is measured.
const SAMPLES: u32 = 4000;
/// The pause before each of them.
const PAUSE: Duration = Duration::from_millis(1);

/// Prints the percentiles of `times`.
fn report(what: &str, mut times: Vec<Duration>) {
    times.sort_unstable();
    let at = |q: f64| {
        let i = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    println!(
        "{what} over {} messages: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
        times.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    );
}

fn latency(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(url) = rt.block_on(troupe_testkit::services::redis_url("latency bench")) else {
        return;
    };
    let prefix = format!("troupe-bench:{}:", uuid::Uuid::new_v4().simple());
    let config = RedisBusConfig {
        key_prefix: prefix.clone(),
        ..RedisBusConfig::default()
    };
    let bus = rt.block_on(RedisBus::connect(&url, config)).unwrap();
    let me = AgentId::new("bench-1").unwrap();
    let mut sub = rt.block_on(bus.subscribe("round-trip", "g", &me)).unwrap();
    let envelope = sample_envelope(1);

    let mut group = c.benchmark_group("redis_bus");
    group.bench_function("publish", |b| {
        b.to_async(&rt)
            .iter(|| bus.publish("publish-only", envelope.clone()));
    });
    group.bench_function("publish_receive_ack", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    bus.publish("round-trip", envelope.clone()).await.unwrap();
                    sub.next().await.unwrap().ack().await.unwrap();
                }
                start.elapsed()
            })
        });
    });
    group.finish();

    // A consumer waiting in `next`; it reports when each message came and
    // that it was acked.
    let (got_tx, mut got_rx) = mpsc::unbounded_channel::<(u32, Instant)>();
    let consumer = rt.spawn(async move {
        loop {
            let delivery = sub.next().await.unwrap();
            let at = Instant::now();
            let seq = delivery.envelope.attempt.unwrap();
            delivery.ack().await.unwrap();
            if got_tx.send((seq, at)).is_err() {
                return;
            }
        }
    });
    let (received, published) = rt.block_on(async {
        let mut received = Vec::with_capacity(SAMPLES as usize);
        let mut published = Vec::with_capacity(SAMPLES as usize);
        for seq in 0..SAMPLES {
            // Lets the consumer get back into its blocking read.
            tokio::time::sleep(PAUSE).await;
            let envelope = sample_envelope(seq);
            let sent = Instant::now();
            bus.publish("round-trip", envelope).await.unwrap();
            published.push(sent.elapsed());
            let (got, at) = tokio::time::timeout(Duration::from_secs(10), got_rx.recv())
                .await
                .expect("no delivery within 10 s")
                .unwrap();
            assert_eq!(got, seq, "messages came out of order");
            received.push(at - sent);
        }
        (received, published)
    });
    consumer.abort();
    report("publish -> receive (consumer waiting in next)", received);
    report("publish alone", published);

    rt.block_on(async {
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    });
}

criterion_group!(benches, latency);
criterion_main!(benches);
