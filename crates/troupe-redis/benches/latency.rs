//! Publish-to-receive latency of the Redis bus on a local Redis.
//!
//! `cargo bench -p troupe-redis --bench latency` (Redis at
//! `TROUPE_TEST_REDIS_URL`, else 127.0.0.1:6379; skipped when none answers).
//! Criterion times `publish` alone and a whole `publish -> next -> ack`
//! round trip through one consumer; the publish-to-receive times of every
//! round trip are also kept, and their percentiles printed at the end
//! (criterion reports means and medians, not tails). Keys go under a
//! random prefix and are deleted afterwards.

// A benchmark binary: it reports on stdout and gives up loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use troupe_core::AgentId;
use troupe_core::bus::Bus;
use troupe_redis::{RedisBus, RedisBusConfig};
use troupe_testkit::conformance::bus::sample_envelope;

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
    let mut received: Vec<Duration> = Vec::new();

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
                    let sent = Instant::now();
                    bus.publish("round-trip", envelope.clone()).await.unwrap();
                    let delivery = sub.next().await.unwrap();
                    received.push(sent.elapsed());
                    delivery.ack().await.unwrap();
                }
                start.elapsed()
            })
        });
    });
    group.finish();

    received.sort_unstable();
    let at = |q: f64| {
        let i = ((received.len() as f64 - 1.0) * q).round() as usize;
        received.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    println!(
        "publish -> receive over {} round trips: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
        received.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    );

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
