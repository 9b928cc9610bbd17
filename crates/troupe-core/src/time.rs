//! The clock: timestamps at the precision every store keeps (milliseconds),
//! so a record compares equal to itself after a round trip through any store.

use chrono::{DateTime, TimeZone, Utc};

/// Now, truncated to whole milliseconds.
pub fn now() -> DateTime<Utc> {
    truncate(Utc::now())
}

/// `t` truncated to whole milliseconds.
pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    from_millis(t.timestamp_millis())
}

/// The instant `ms` milliseconds after the Unix epoch (clamped to chrono's range).
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
