//! [`Metrics`]: the process's Prometheus recorder and its `/metrics` text.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use troupe::telemetry::metrics::{BUCKETS_SECONDS, describe};

/// How often histograms are compacted.
const UPKEEP: Duration = Duration::from_secs(5);

static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// The process-wide Prometheus recorder. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the recorder (once per process; later calls share it) and
    /// starts a thread that compacts its histograms every few seconds.
    ///
    /// Fails if another `metrics` recorder was installed first.
    pub fn install() -> Result<Self, String> {
        // Installation is short and never panics inside the lock; a poisoned lock is still consistent.
        let mut installed = HANDLE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = installed.as_ref() {
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
        describe();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                }
            })
            .map_err(|e| format!("cannot start the metrics upkeep thread: {e}"))?;
        *installed = Some(handle.clone());
        Ok(Self { handle })
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
