//! The in-memory bus and store pass their conformance suites, one test per check.

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod memory_bus {
    use std::sync::Arc;
    use std::time::Duration;

    use troupe_core::bus::{Bus, MemoryBus, MemoryBusConfig};
    use troupe_testkit::conformance::Fixture;
    use troupe_testkit::conformance::bus::BusSuite;

    async fn bus(_check: &str) -> Option<Fixture<(BusSuite, Arc<dyn Bus>)>> {
        let suite = BusSuite {
            visibility_timeout: Duration::from_millis(200),
            max_deliveries: 3,
        };
        let config = MemoryBusConfig {
            visibility_timeout: suite.visibility_timeout,
            max_deliveries: suite.max_deliveries,
            ..MemoryBusConfig::default()
        };
        Some(Fixture::new((suite, Arc::new(MemoryBus::new(config)))))
    }

    troupe_testkit::bus_conformance!(bus);
}

mod memory_store {
    use std::sync::Arc;

    use troupe_core::store::{MemoryStore, Stores};
    use troupe_testkit::conformance::Fixture;

    async fn stores(_check: &str) -> Option<Fixture<Stores>> {
        Some(Fixture::new(Stores::from_backend(Arc::new(
            MemoryStore::default(),
        ))))
    }

    troupe_testkit::store_conformance!(stores);
}
