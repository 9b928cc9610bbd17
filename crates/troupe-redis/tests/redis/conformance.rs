//! The bus conformance suite on Redis, one test per check, each under its
//! own key prefix (deleted when the check passes).

use std::sync::Arc;

use troupe_core::bus::Bus;
use troupe_testkit::conformance::Fixture;
use troupe_testkit::conformance::bus::BusSuite;

use crate::support::Env;

async fn bus(check: &str) -> Option<Fixture<(BusSuite, Arc<dyn Bus>)>> {
    let env = Env::new(check).await?;
    let config = env.config();
    let suite = BusSuite {
        visibility_timeout: config.visibility_timeout,
        max_deliveries: config.max_deliveries,
    };
    let bus: Arc<dyn Bus> = Arc::new(env.bus().await);
    Some(Fixture::with_cleanup((suite, bus), env.cleanup()))
}

troupe_testkit::bus_conformance!(bus);
