//! Backoff delays: exponential growth, a cap, and jitter so that retries of
//! many tasks do not arrive in lockstep.

use std::time::Duration;

use crate::config::BackoffConfig;

/// The delay before attempt `attempt + 1`, after attempt `attempt` (from 1) failed.
/// A server's `Retry-After` is honoured when it asks for longer.
pub fn delay(config: &BackoffConfig, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
    let base = config.initial.as_secs_f64() * config.multiplier.powi(exponent);
    let capped = base.min(config.max.as_secs_f64());
    let spread = if config.jitter > 0.0 {
        1.0 + config.jitter * (fastrand::f64() * 2.0 - 1.0)
    } else {
        1.0
    };
    let jittered = (capped * spread).clamp(0.0, config.max.as_secs_f64());
    let computed = Duration::try_from_secs_f64(jittered).unwrap_or(config.max);
    retry_after.map_or(computed, |r| r.max(computed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stop_at_the_cap() {
        let c = BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
        };
        let got: Vec<u128> = (1..=6).map(|a| delay(&c, a, None).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            delay(&c, 1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            delay(&c, 3, Some(Duration::from_millis(10))),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let c = BackoffConfig {
            jitter: 0.2,
            ..BackoffConfig::default()
        };
        for _ in 0..1000 {
            let d = delay(&c, 1, None).as_secs_f64();
            assert!((0.16..=0.24).contains(&d), "{d}");
        }
    }
}
