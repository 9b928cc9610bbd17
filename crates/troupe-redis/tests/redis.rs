//! The Redis bus against a real Redis: the bus conformance suite, and what
//! only Redis can do wrong (dead consumers, lost streams, restarts, junk
//! entries, limits, TLS URLs).
//!
//! Every test asks `troupe_testkit::services::redis_url` for a Redis (the
//! local one at 127.0.0.1:6379 unless `TROUPE_TEST_REDIS_URL` says
//! otherwise) and is skipped, with the reason printed, when none answers
//! (outside CI). Each uses its own random key prefix, so runs in parallel do
//! not meet, and deletes its keys when it passes. Tests that stop Redis
//! start their own `redis-server` on a free port.

// Test code: a failed expectation is meant to panic; a skipped test says why on stderr.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

#[path = "redis/conformance.rs"]
mod conformance;
#[path = "redis/delivery.rs"]
mod delivery;
#[path = "redis/failures.rs"]
mod failures;
#[path = "redis/limits.rs"]
mod limits;
#[path = "redis/malformed.rs"]
mod malformed;
#[path = "redis/support.rs"]
mod support;
#[path = "redis/tls.rs"]
mod tls;
#[path = "redis/trim.rs"]
mod trim;
