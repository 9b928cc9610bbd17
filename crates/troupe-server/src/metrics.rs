//! [`Metrics`]: the process's Prometheus recorder and its `/metrics` text.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use troupe::telemetry::metrics::{BUCKETS_SECONDS, describe};

/// How often histograms are compacted.
const UPKEEP: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the recorder (once per process; later calls share it) and
    /// starts its upkeep on the current tokio runtime.
    ///
    /// Fails if another `metrics` recorder was installed first.
    pub fn install() -> Result<Self, String> {
        if let Some(handle) = HANDLE.get() {
            return Ok(Self {
                handle: handle.clone(),
            });
        }
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS_SECONDS)
            .map_err(|e| format!("cannot set up the Prometheus recorder: {e}"))?
            .build_recorder();
        let handle = recorder.handle();
        ::metrics::set_global_recorder(recorder)
            .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))?;
        let handle = HANDLE.get_or_init(|| handle).clone();
        describe();
        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP);
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
        Ok(Self { handle })
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
