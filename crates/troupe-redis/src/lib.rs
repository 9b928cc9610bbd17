//! # troupe-redis
//!
//! The Redis Streams implementation of Troupe's message bus
//! ([`troupe_core::bus::Bus`]), for running the orchestrator and workers as
//! separate processes. It behaves as the in-memory bus does (both pass the
//! same conformance suite, `troupe_testkit::conformance::bus`): at-least-once
//! delivery with explicit ack, a visibility timeout after which another
//! consumer of the group gets the message, dead letters after
//! `max_deliveries`, requeueable, and a worker registry kept by heartbeats.
//!
//! ```no_run
//! use troupe_core::bus::Bus;
//! use troupe_core::envelope::{Envelope, MessageKind, Progress};
//! use troupe_core::AgentId;
//! use troupe_redis::{RedisBus, RedisBusConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = RedisBus::connect("redis://127.0.0.1:6379", RedisBusConfig::default()).await?;
//! let me = AgentId::new("worker-1")?;
//! let mut sub = bus.subscribe("jobs", "workers", &me).await?;
//! bus.publish("jobs", Envelope::new(MessageKind::Progress, me.clone(), "jobs", &Progress::Started)?)
//!     .await?;
//! let delivery = sub.next().await?;
//! delivery.ack().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Redis 6.2 or newer is needed (`XAUTOCLAIM`); 7.0 or newer makes the
//! queue depth ([`QueueDepth`](troupe_core::bus::QueueDepth)) exact. The bus
//! survives a Redis restart without persistence: publishing fails with the
//! retryable [`BusError::Unavailable`](troupe_core::bus::BusError) while
//! Redis is down, receiving waits and retries, and lost consumer groups are
//! recreated. Messages Redis lost are not recovered here: the coordinator
//! dispatches an attempt again when its reply does not come in time.
//!
//! [`open_url`] opens the bus a URL names: this one, or the in-memory bus
//! for `memory`.
//!
//! # Layout
//!
//! Each file opens with what it does and why; read them in this order:
//!
//! - `bus.rs`: [`RedisBus`], publishing, subscribing, dead letters, depth,
//!   and how a message moves through Redis (and why acked entries are
//!   trimmed, not deleted).
//! - `subscription.rs`: a consumer's receive loop (recover, reclaim, read),
//!   its cancel safety and failure handling.
//! - `acker.rs`: ack, nack, extend and dead-letter of one delivery.
//! - `scripts.rs`: the Lua scripts that make each of those atomic.
//! - `entry.rs`, `dead_letter.rs`: what stream entries hold and how they are read.
//! - `registry.rs`: the worker registry.
//! - `open.rs`: [`open_url`].
//! - `connection.rs`, `config.rs` ([`RedisBusConfig`]), `keys.rs`, `error.rs`:
//!   connecting (TLS included), settings, key names, and errors that say
//!   what to do next.

mod acker;
mod bus;
mod config;
mod connection;
mod dead_letter;
mod entry;
mod error;
mod keys;
mod open;
mod registry;
mod scripts;
mod subscription;

pub use bus::RedisBus;
pub use config::RedisBusConfig;
pub use open::{BusOptions, open_url};
