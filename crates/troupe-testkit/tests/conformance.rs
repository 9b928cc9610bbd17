//! The in-memory bus and store pass their conformance suites.

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use troupe_core::bus::{Bus, MemoryBus, MemoryBusConfig};
use troupe_core::store::{MemoryStore, Stores};
use troupe_testkit::conformance::bus::BusSuite;
use troupe_testkit::conformance::store::StoreSuite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bus_conforms() {
    let visibility_timeout = Duration::from_millis(200);
    let suite = BusSuite {
        visibility_timeout,
        max_deliveries: 3,
    };
    suite
        .run(|| async move {
            let config = MemoryBusConfig {
                visibility_timeout,
                max_deliveries: 3,
                ..MemoryBusConfig::default()
            };
            Arc::new(MemoryBus::new(config)) as Arc<dyn Bus>
        })
        .await;
}

#[tokio::test]
async fn memory_store_conforms() {
    StoreSuite
        .run(|| async { Stores::from_backend(Arc::new(MemoryStore::default())) })
        .await;
}
