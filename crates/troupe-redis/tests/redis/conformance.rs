//! The bus conformance suite, on Redis.

use std::sync::Arc;

use troupe_core::bus::Bus;
use troupe_testkit::conformance::bus::BusSuite;

use crate::support::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bus_conforms() {
    let Some(env) = Env::new("redis_bus_conforms").await else {
        return;
    };
    let config = env.config();
    let suite = BusSuite {
        visibility_timeout: config.visibility_timeout,
        max_deliveries: config.max_deliveries,
    };
    suite
        .run(|| async { Arc::new(env.bus().await) as Arc<dyn Bus> })
        .await;
    env.cleanup().await;
}
