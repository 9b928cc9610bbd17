//! Bounds of every configuration value, checked with an error that names the key.

use std::time::Duration;

use super::{BackoffConfig, LlmCallConfig, MIN_PROMPT_BUDGET_TOKENS, TroupeConfig, duration};

/// A configuration value out of its bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key} {problem}")]
pub struct ConfigError {
    /// The key, as in the file (`orchestrator.max_attempts`).
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn at_least<T: PartialOrd + std::fmt::Display + Copy>(
    key: &'static str,
    v: T,
    min: T,
) -> Result<(), ConfigError> {
    if v < min {
        Err(ConfigError {
            key,
            problem: format!("is {v}; it must be at least {min}"),
        })
    } else {
        Ok(())
    }
}

fn at_most_a_day(key: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d > Duration::from_secs(24 * 3600) {
        Err(ConfigError {
            key,
            problem: "must be at most 24h".into(),
        })
    } else {
        Ok(())
    }
}

fn nonzero(key: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(ConfigError {
            key,
            problem: "must be longer than 0".into(),
        })
    } else {
        Ok(())
    }
}

impl BackoffConfig {
    fn validate(&self, prefix: &'static str) -> Result<(), ConfigError> {
        if !(self.multiplier >= 1.0 && self.multiplier <= 100.0) {
            return Err(ConfigError {
                key: prefix,
                problem: format!("multiplier {} must be between 1 and 100", self.multiplier),
            });
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError {
                key: prefix,
                problem: format!("jitter {} must be between 0 and 1", self.jitter),
            });
        }
        if self.initial > self.max {
            return Err(ConfigError {
                key: prefix,
                problem: "initial must not exceed max".into(),
            });
        }
        Ok(())
    }
}

impl TroupeConfig {
    /// How the orchestrator's own LLM calls (plans, evaluations, the final
    /// answer) are made: as `[llm]` says, but a transient failure is retried
    /// as often as a subtask's is over all its attempts (`llm.max_attempts` ×
    /// `orchestrator.max_attempts`), since no other level retries them.
    pub fn orchestrator_calls(&self) -> LlmCallConfig {
        LlmCallConfig {
            max_attempts: self
                .llm
                .max_attempts
                .saturating_mul(self.orchestrator.max_attempts),
            ..self.llm.clone()
        }
    }

    /// Checks every bound; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let o = &self.orchestrator;
        at_least("orchestrator.max_plan_attempts()", o.max_plan_attempts(), 1)?;
        at_least("orchestrator.max_subtasks", o.max_subtasks, 1)?;
        if o.max_subtasks > 100 {
            return Err(ConfigError {
                key: "orchestrator.max_subtasks",
                problem: format!("is {}; at most 100", o.max_subtasks),
            });
        }
        at_least("orchestrator.max_attempts", o.max_attempts, 1)?;
        at_least("orchestrator.max_stalls", o.max_stalls, 1)?;
        nonzero("orchestrator.subtask_timeout()", o.subtask_timeout())?;
        nonzero("orchestrator.task_timeout", o.task_timeout)?;
        at_least(
            "orchestrator.prompt_budget_tokens",
            o.prompt_budget_tokens(),
            MIN_PROMPT_BUDGET_TOKENS,
        )?;
        at_least("orchestrator.max_goal_chars", o.max_goal_chars, 1)?;
        o.retry.validate("orchestrator.retry")?;
        at_least(
            "orchestrator.role_breaker.failure_threshold",
            o.role_breaker.failure_threshold,
            1,
        )?;
        nonzero(
            "orchestrator.role_breaker.reset_timeout",
            o.role_breaker.reset_timeout,
        )?;
        at_most_a_day(
            "orchestrator.role_breaker.reset_timeout",
            o.role_breaker.reset_timeout,
        )?;
        let w = &self.workers;
        at_least("workers.per_role", w.per_role, 1)?;
        at_least("workers.concurrency", w.concurrency, 1)?;
        nonzero("workers.heartbeat", w.heartbeat)?;
        let l = &self.llm;
        nonzero("llm.timeout()", l.timeout())?;
        at_least("llm.max_attempts", l.max_attempts, 1)?;
        l.retry.validate("llm.retry")?;
        at_least(
            "llm.breaker.failure_threshold",
            l.breaker.failure_threshold,
            1,
        )?;
        nonzero("llm.breaker.reset_timeout", l.breaker.reset_timeout)?;
        at_most_a_day("llm.breaker.reset_timeout", l.breaker.reset_timeout)?;
        let c = &self.coordinator;
        nonzero("coordinator.scan_interval", c.scan_interval)?;
        at_least("coordinator.takeover_batch", c.takeover_batch, 1)?;
        at_least("coordinator.checkpoint_every", c.checkpoint_every, 1)?;
        if c.lease_ttl < Duration::from_millis(300) || c.lease_ttl > Duration::from_secs(3600) {
            return Err(ConfigError {
                key: "coordinator.lease_ttl",
                problem: format!(
                    "is {}; it must be between 300ms and 1h",
                    duration::format(c.lease_ttl)
                ),
            });
        }
        at_least("retry.store.max_attempts", self.retry.store.max_attempts, 1)?;
        self.retry.store.backoff.validate("retry.store.backoff")?;
        at_least("retry.bus.max_attempts", self.retry.bus.max_attempts, 1)?;
        self.retry.bus.backoff.validate("retry.bus.backoff")?;
        if let Some(t) = l.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(ConfigError {
                key: "llm.temperature",
                problem: format!("is {t}; it must be between 0 and 2"),
            });
        }
        Ok(())
    }
}
