//! Opening connections: the shared command connection and each
//! subscription's own connection for blocking reads.
//!
//! Commands go through one [`ConnectionManager`]: multiplexed (many commands
//! in flight on one socket) and reconnecting in the background after a
//! failure. A blocking `XREADGROUP` on it would hold up every command queued
//! behind it, so each subscription reads on a connection of its own (see
//! [`reader`]), which it drops and opens again after an error.
//!
//! `rediss://` URLs use TLS through rustls with the aws-lc-rs provider (the
//! one the rest of Troupe uses); when the process has not chosen a provider
//! yet, connecting installs that one as the process default. The server's
//! certificate is checked against the system's roots, or against the
//! authority given in [`RedisBusConfig::tls_root_cert_pem`].

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, TlsCertificates};
use troupe_core::bus::BusError;

use crate::config::RedisBusConfig;
use crate::error::bus_error;

/// The oldest Redis with everything the bus uses (`XAUTOCLAIM`, `XTRIM MINID`).
const MIN_VERSION: (u32, u32) = (6, 2);

/// A client for `url`, which must be `redis://` or `rediss://`; a TLS one
/// trusts `root_cert_pem` if given, else the system's roots.
pub(crate) fn client(url: &str, root_cert_pem: Option<&str>) -> Result<Client, BusError> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let tls = match scheme.as_deref() {
        Some("redis") => false,
        Some("rediss") => true,
        _ => {
            return Err(BusError::Invalid(
                "a Redis URL starts with redis:// or rediss:// (TLS)".into(),
            ));
        }
    };
    // The URL may hold a password: it is never part of an error message.
    let bad_url =
        |e: redis::RedisError| BusError::Invalid(format!("bad Redis URL: {}", e.category()));
    match (tls, root_cert_pem) {
        (false, _) => Client::open(url).map_err(bad_url),
        (true, None) => {
            install_crypto_provider();
            Client::open(url).map_err(bad_url)
        }
        (true, Some(pem)) => {
            install_crypto_provider();
            let certificates = TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.as_bytes().to_vec()),
            };
            Client::build_with_tls(url, certificates).map_err(|e| {
                BusError::Invalid(format!("bad Redis URL or TLS root certificate: {e}"))
            })
        }
    }
}

/// Where `client` connects, for messages (never the credentials).
pub(crate) fn address(client: &Client) -> String {
    let addr = client.get_connection_info().addr();
    match addr {
        ConnectionAddr::TcpTls { .. } => format!("rediss://{addr}"),
        _ => format!("redis://{addr}"),
    }
}

/// The shared, reconnecting command connection.
pub(crate) async fn manager(
    client: Client,
    config: &RedisBusConfig,
) -> Result<ConnectionManager, BusError> {
    let address = address(&client);
    let settings = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.command_timeout))
        // While Redis is down a command fails within about a second, so a
        // publisher gets `Unavailable` promptly instead of waiting.
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, settings)
        .await
        .map_err(|e| unreachable(&address, &e))
}

/// A subscription's own connection for blocking reads; its replies may take
/// the whole blocking time on top of the command timeout.
pub(crate) async fn reader(
    client: &Client,
    config: &RedisBusConfig,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.read_block() + config.command_timeout));
    client
        .get_multiplexed_async_connection_with_config(&settings)
        .await
}

/// Refuses a Redis too old for the bus; a server that does not say its
/// version (some managed services hide `INFO`) is given the benefit of the doubt.
pub(crate) async fn check_version(conn: &mut ConnectionManager) -> Result<(), BusError> {
    let info: String = match redis::cmd("INFO").arg("server").query_async(conn).await {
        Ok(info) => info,
        Err(e) if e.is_io_error() => return Err(bus_error(&e)),
        Err(e) => {
            tracing::debug!(error = %e, "Redis does not say its version");
            return Ok(());
        }
    };
    let Some(version) = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .map(str::trim)
    else {
        return Ok(());
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_VERSION {
        return Err(BusError::Invalid(format!(
            "Redis {version} is too old for the bus: it needs {}.{} or newer",
            MIN_VERSION.0, MIN_VERSION.1
        )));
    }
    Ok(())
}

/// The error for a Redis that cannot be reached.
fn unreachable(address: &str, err: &redis::RedisError) -> BusError {
    match bus_error(err) {
        BusError::Unavailable(_) => {
            BusError::Unavailable(format!("cannot connect to Redis at {address}: {err}"))
        }
        other => other,
    }
}

/// Makes aws-lc-rs the process's rustls provider unless one was chosen:
/// redis-rs builds its TLS settings from the process default, which rustls
/// cannot pick by itself when more than one provider is compiled in.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing one is fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_redis_and_rediss_urls_only() {
        assert!(client("redis://127.0.0.1:6379", None).is_ok());
        assert!(client("rediss://user:secret@cache.example:6380/0", None).is_ok());
        let err = client("http://127.0.0.1:6379", None).unwrap_err();
        assert!(matches!(err, BusError::Invalid(_)), "{err}");
        assert!(client("127.0.0.1:6379", None).is_err());
    }

    #[test]
    fn names_the_address_without_credentials() {
        let c = client("rediss://user:secret@cache.example:6380/0", None).unwrap();
        assert_eq!(address(&c), "rediss://cache.example:6380");
    }
}
