//! Message send on the in-memory bus: publish, receive and acknowledge one
//! envelope, alone and with 64 in flight; and the JSON round trip an envelope
//! makes on a bus between processes.

// Benchmark code: a failed setup is meant to stop the run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use troupe_core::bus::{Bus, MemoryBus};
use troupe_core::envelope::{Envelope, MessageKind};
use troupe_core::{AgentId, SubtaskId, TaskId};

fn envelope() -> Envelope {
    let payload = json!({"output": "x".repeat(500), "usage": {"prompt_tokens": 100, "completion_tokens": 120}});
    Envelope::new(
        MessageKind::TaskResult,
        AgentId::new("writer-1").unwrap(),
        "orchestrator-1",
        &payload,
    )
    .unwrap()
    .about(TaskId::new(), &SubtaskId::new("s1").unwrap(), 1)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bus = Arc::new(MemoryBus::default());
    let me = AgentId::new("bench-1").unwrap();
    let mut sub = rt.block_on(bus.subscribe("bench", "g", &me)).unwrap();
    let template = envelope();

    let mut group = c.benchmark_group("memory_bus");
    group.throughput(Throughput::Elements(1));
    group.bench_function("send_receive_ack", |b| {
        b.iter(|| {
            rt.block_on(async {
                bus.publish("bench", template.clone()).await.unwrap();
                let d = sub.next().await.unwrap();
                d.ack().await.unwrap();
            });
        });
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("send_receive_ack_64_in_flight", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..64 {
                    bus.publish("bench", template.clone()).await.unwrap();
                }
                for _ in 0..64 {
                    sub.next().await.unwrap().ack().await.unwrap();
                }
            });
        });
    });
    group.finish();

    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Elements(1));
    group.bench_function("json_round_trip", |b| {
        b.iter(|| {
            let bytes = serde_json::to_vec(&template).unwrap();
            serde_json::from_slice::<Envelope>(&bytes).unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
