//! [`RedisBusConfig`]: the settings of a [`RedisBus`](crate::RedisBus), taken
//! by value at connect time and checked there.

use std::time::Duration;

use troupe_core::bus::BusError;

/// The largest value Redis accepts in one bulk string by default (`proto-max-bulk-len`).
const REDIS_MAX_BULK: usize = 512 * 1024 * 1024;

/// Settings of a [`RedisBus`](crate::RedisBus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisBusConfig {
    /// How long a delivery stays invisible to the other consumers of its group
    /// before any of them may reclaim it. Keep it longer than the longest
    /// handling between two [`extend`](troupe_core::bus::Delivery::extend) calls.
    pub visibility_timeout: Duration,
    /// Deliveries after which an unacked message goes to the dead letters.
    pub max_deliveries: u32,
    /// How long one `XREADGROUP` waits for a new message. An idle consumer
    /// looks for timed-out messages of its group between two waits, so the
    /// wait used is at most half the visibility timeout.
    pub block: Duration,
    /// Prepended to every key the bus uses, so that several deployments (or
    /// test runs) can share one Redis.
    pub key_prefix: String,
    /// The largest encoded envelope [`publish`](troupe_core::bus::Bus::publish)
    /// accepts, in bytes.
    pub max_message_bytes: usize,
    /// About how many dead letters are kept per topic; the oldest go first.
    pub max_dead_letters: usize,
    /// How often a consumer trims its topic's stream of messages every group
    /// has acknowledged (and forgets consumers gone for good, below).
    pub trim_interval: Duration,
    /// A consumer with nothing pending that has not read for this long is
    /// removed from its group (its process ended; worker ids are unique per
    /// process, so groups would otherwise collect them). One that comes back
    /// is recreated by its next read.
    pub forget_consumers_after: Duration,
    /// How long to wait for Redis to answer one command.
    pub command_timeout: Duration,
    /// How long to wait for a connection to Redis to open.
    pub connect_timeout: Duration,
    /// For `rediss://`: the certificate (PEM) of the authority that signed
    /// the server's certificate, trusted instead of the system's roots (a
    /// private CA). `None` trusts the system's roots.
    pub tls_root_cert_pem: Option<String>,
}

impl Default for RedisBusConfig {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(60),
            max_deliveries: 5,
            block: Duration::from_secs(1),
            key_prefix: "troupe:".to_owned(),
            max_message_bytes: 1024 * 1024,
            max_dead_letters: 10_000,
            trim_interval: Duration::from_secs(10),
            forget_consumers_after: Duration::from_secs(3600),
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            tls_root_cert_pem: None,
        }
    }
}

impl RedisBusConfig {
    /// Refuses settings the bus cannot work with.
    pub(crate) fn validate(&self) -> Result<(), BusError> {
        let invalid = |what: &str| Err(BusError::Invalid(format!("Redis bus settings: {what}")));
        if self.visibility_timeout < Duration::from_millis(2) {
            return invalid("visibility_timeout must be at least 2 ms");
        }
        if self.max_deliveries == 0 {
            return invalid("max_deliveries must be at least 1");
        }
        if self.block < Duration::from_millis(1) {
            return invalid("block must be at least 1 ms");
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > REDIS_MAX_BULK {
            return invalid("max_message_bytes must be between 1 byte and 512 MiB");
        }
        if self.max_dead_letters == 0 {
            return invalid("max_dead_letters must be at least 1");
        }
        if self.forget_consumers_after < self.read_block() * 2 {
            return invalid("forget_consumers_after must be at least twice the read block");
        }
        if self.command_timeout.is_zero() || self.connect_timeout.is_zero() {
            return invalid("command_timeout and connect_timeout must be positive");
        }
        Ok(())
    }

    /// How long one `XREADGROUP` blocks: `block`, at most half the visibility
    /// timeout (so timed-out messages are looked for often enough), at least 1 ms
    /// (`BLOCK 0` would wait forever).
    pub(crate) fn read_block(&self) -> Duration {
        self.block
            .min(self.visibility_timeout / 2)
            .max(Duration::from_millis(1))
    }
}

/// Whole milliseconds of `d`, for Redis arguments.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_nonsense_is_refused() {
        assert_eq!(RedisBusConfig::default().validate(), Ok(()));
        let zero = RedisBusConfig {
            max_deliveries: 0,
            ..RedisBusConfig::default()
        };
        assert!(matches!(zero.validate(), Err(BusError::Invalid(_))));
        let huge = RedisBusConfig {
            max_message_bytes: usize::MAX,
            ..RedisBusConfig::default()
        };
        assert!(matches!(huge.validate(), Err(BusError::Invalid(_))));
    }

    #[test]
    fn a_read_blocks_at_most_half_the_visibility_timeout() {
        let config = RedisBusConfig {
            visibility_timeout: Duration::from_millis(300),
            ..RedisBusConfig::default()
        };
        assert_eq!(config.read_block(), Duration::from_millis(150));
        assert_eq!(
            RedisBusConfig::default().read_block(),
            Duration::from_secs(1)
        );
    }
}
