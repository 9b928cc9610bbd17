//! [`open_url`]: the bus a URL names, `memory` or `redis://` / `rediss://`,
//! with the delivery settings both buses share.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use troupe_core::bus::{Bus, BusError, MemoryBus, MemoryBusConfig};
use troupe_core::redact_url;

use crate::{RedisBus, RedisBusConfig};

/// How [`open_url`] makes a bus; unset fields keep each bus's defaults (60 s
/// and 5 deliveries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusOptions {
    /// How long a delivery stays invisible to the other consumers of its
    /// group before one of them may take it: how soon a message held by a
    /// worker that died goes to another.
    pub visibility_timeout: Option<Duration>,
    /// Deliveries after which a message goes to the dead letters.
    pub max_deliveries: Option<u32>,
    /// For `rediss://`: a PEM file with the certificate of the authority that
    /// signed the server's (a private CA), trusted instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// For Redis: what every key starts with (`troupe:` otherwise), so that
    /// several deployments or applications can share one Redis apart.
    pub key_prefix: Option<String>,
}

/// Opens the bus `url` names: `memory` (this process only) or a Redis at
/// `redis://[user:password@]host[:port][/db]` (`rediss://` for TLS).
///
/// ```
/// use troupe_redis::{BusOptions, open_url};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let bus = open_url("memory", &BusOptions::default()).await.unwrap();
/// assert_eq!(bus.name(), "memory");
/// assert!(bus.dead_letters().is_some());
/// let err = open_url("amqp://u:pw@mq", &BusOptions::default()).await.unwrap_err();
/// assert!(err.to_string().contains("amqp://u:***@mq"), "{err}");
/// # });
/// ```
pub async fn open_url(url: &str, options: &BusOptions) -> Result<Arc<dyn Bus>, BusError> {
    let url = url.trim();
    if url == "memory" {
        let mut config = MemoryBusConfig::default();
        if let Some(v) = options.visibility_timeout {
            config.visibility_timeout = v;
        }
        if let Some(n) = options.max_deliveries {
            config.max_deliveries = n;
        }
        return Ok(Arc::new(MemoryBus::new(config)));
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        let mut config = RedisBusConfig::default();
        if let Some(v) = options.visibility_timeout {
            config.visibility_timeout = v;
        }
        if let Some(n) = options.max_deliveries {
            config.max_deliveries = n;
        }
        if let Some(prefix) = &options.key_prefix {
            config.key_prefix.clone_from(prefix);
        }
        if let Some(path) = &options.tls_ca_file {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                BusError::Invalid(format!(
                    "cannot read the bus's CA file {}: {e}",
                    path.display()
                ))
            })?;
            config.tls_root_cert_pem = Some(pem);
        }
        return Ok(Arc::new(RedisBus::connect(url, config).await?));
    }
    Err(BusError::Invalid(format!(
        "unknown bus URL {:?}: use memory, redis://HOST[:PORT] or rediss://HOST[:PORT]",
        redact_url(url)
    )))
}
