//! The runtime's configuration: one typed tree with defaults, unknown keys
//! rejected, and a check of every bound. Binaries fill it from a file, the
//! environment and flags; the library never reads the environment itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the runtime can be told.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TroupeConfig {
    /// How tasks are planned, dispatched, retried and re-planned.
    pub orchestrator: OrchestratorConfig,
    /// The workers hosted in this process.
    pub workers: WorkersConfig,
    /// How LLM calls are made.
    pub llm: LlmCallConfig,
    /// How failed store and bus operations are retried.
    pub retry: RetryConfig,
    /// How coordinators share tasks: leases, take-over, checkpoints.
    pub coordinator: CoordinatorConfig,
}

/// How coordinators share tasks. A coordinator drives a task while it holds
/// the task's lease, renewing it every third of `lease_ttl`; when a
/// coordinator dies, another one takes its tasks over once their leases
/// lapse, and resumes each from its checkpoint and the task ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// How long a claim on a task lasts without renewal: how soon after a
    /// coordinator dies its tasks can be taken over.
    #[serde(with = "duration")]
    pub lease_ttl: Duration,
    /// Whether this process takes over tasks whose coordinator died (or that
    /// a stopping one gave back). `troupe run` and `troupe bench` turn it off.
    pub takeover: bool,
    /// How often this process looks for such tasks.
    #[serde(with = "duration")]
    pub scan_interval: Duration,
    /// The most tasks taken over per look.
    pub takeover_batch: usize,
    /// A task's state is checkpointed at every status change and after this
    /// many progress steps.
    pub checkpoint_every: u32,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(15),
            takeover: true,
            scan_interval: Duration::from_secs(5),
            takeover_batch: 50,
            checkpoint_every: 20,
        }
    }
}

/// Retries of store and bus operations that failed for a passing reason
/// (the database or the broker unavailable, a queue full).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Store operations (task ledger and progress ledger).
    pub store: RetrySettings,
    /// Bus operations (publishing).
    pub bus: RetrySettings,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let quick = RetrySettings {
            max_attempts: 5,
            backoff: BackoffConfig {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(2),
                ..BackoffConfig::default()
            },
        };
        Self {
            store: quick.clone(),
            bus: quick,
        }
    }
}

/// How many attempts, and the backoff between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts in all (1: no retry).
    pub max_attempts: u32,
    /// The backoff between them.
    pub backoff: BackoffConfig,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetryConfig::default().store
    }
}

/// The characters per token assumed when fitting text into a token budget
/// (about right for English with the common BPE tokenizers; a context-length
/// error from the model corrects an overestimate).
pub const CHARS_PER_TOKEN: usize = 4;

/// How the orchestrator runs tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrchestratorConfig {
    /// Replies asked of the LLM for one plan before giving up (the first and the repairs).
    pub max_plan_attempts: u32,
    /// The most subtasks a plan may have.
    pub max_subtasks: usize,
    /// Attempts per subtask before it fails for good.
    pub max_attempts: u32,
    /// How long a worker has for one attempt.
    #[serde(with = "duration")]
    pub subtask_timeout: Duration,
    /// How long a whole task may take.
    #[serde(with = "duration")]
    pub task_timeout: Duration,
    /// Re-plans allowed per task after failures or stalls.
    pub max_replans: u32,
    /// Failures in a row, with no subtask completing, that count as a stall and trigger a re-plan.
    pub max_stalls: u32,
    /// Whether the LLM is asked to judge a stuck run (progress made? in a
    /// loop? re-plan or give up?) before a re-plan.
    pub evaluate_progress: bool,
    /// A circuit breaker per worker role: after `failure_threshold`
    /// failures in a row (timeouts, retryable errors) the role's subtasks
    /// wait, undispatched, for `reset_timeout`; then one trial goes.
    pub role_breaker: BreakerConfig,
    /// The backoff between attempts of a subtask.
    pub retry: BackoffConfig,
    /// The most tokens of earlier results (a worker's dependencies, the
    /// synthesis's inputs, a re-plan's history) put into one prompt. Text is
    /// measured at [`CHARS_PER_TOKEN`] characters per token; when a model still
    /// says the prompt is too long, the budget is halved and the call retried.
    pub prompt_budget_tokens: usize,
    /// The longest goal accepted, in characters.
    pub max_goal_chars: usize,
}

impl OrchestratorConfig {
    /// The prompt budget in characters.
    pub fn prompt_budget_chars(&self) -> usize {
        self.prompt_budget_tokens.saturating_mul(CHARS_PER_TOKEN)
    }
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            max_plan_attempts: 3,
            max_subtasks: 12,
            max_attempts: 3,
            subtask_timeout: Duration::from_secs(300),
            task_timeout: Duration::from_secs(3600),
            max_replans: 1,
            max_stalls: 3,
            evaluate_progress: true,
            role_breaker: BreakerConfig::default(),
            retry: BackoffConfig::default(),
            prompt_budget_tokens: 6_000,
            max_goal_chars: 100_000,
        }
    }
}

/// The workers hosted in this process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// Workers started per role.
    pub per_role: usize,
    /// Subtasks one worker runs at once.
    pub concurrency: usize,
    /// How often a busy worker tells the bus it still holds its message
    /// (must be well inside the bus's visibility timeout).
    #[serde(with = "duration")]
    pub heartbeat: Duration,
    /// How long a stopping worker lets its subtasks finish before handing them back.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            per_role: 2,
            concurrency: 8,
            heartbeat: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// How LLM calls are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmCallConfig {
    /// How long one call may take.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Calls made for one request when errors are retryable.
    pub max_attempts: u32,
    /// The backoff between them.
    pub retry: BackoffConfig,
    /// Sampling temperature, if not the provider's default.
    pub temperature: Option<f32>,
    /// The most tokens a reply may have, if not the provider's default.
    pub max_tokens: Option<u32>,
    /// The circuit breaker around each provider.
    pub breaker: BreakerConfig,
    /// Rate and concurrency limits per provider.
    pub limits: LimitsConfig,
}

/// A circuit breaker: after `failure_threshold` failures in a row the
/// provider is not called for `reset_timeout`; then one trial call decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Whether providers have a breaker.
    pub enabled: bool,
    /// Failures in a row (server errors, timeouts, broken connections,
    /// unusable replies) that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before a trial call.
    #[serde(with = "duration")]
    pub reset_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: 5,
            reset_timeout: Duration::from_secs(30),
        }
    }
}

/// Limits on the calls to one provider; 0 means no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Calls started per second.
    pub requests_per_second: u32,
    /// Tokens per minute, estimated before the call (prompt characters / 4
    /// plus the reply's `max_tokens`).
    pub tokens_per_minute: u32,
    /// Calls in flight at once.
    pub max_concurrent: u32,
}

impl Default for LlmCallConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            max_attempts: 3,
            retry: BackoffConfig {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(20),
                ..BackoffConfig::default()
            },
            temperature: None,
            max_tokens: None,
            breaker: BreakerConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// The delay before the second attempt.
    #[serde(with = "duration")]
    pub initial: Duration,
    /// The longest delay.
    #[serde(with = "duration")]
    pub max: Duration,
    /// How much each delay grows over the previous one.
    pub multiplier: f64,
    /// The share by which a delay is randomly shortened or lengthened (0 to 1).
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

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
        at_least("orchestrator.max_plan_attempts", o.max_plan_attempts, 1)?;
        at_least("orchestrator.max_subtasks", o.max_subtasks, 1)?;
        if o.max_subtasks > 100 {
            return Err(ConfigError {
                key: "orchestrator.max_subtasks",
                problem: format!("is {}; at most 100", o.max_subtasks),
            });
        }
        at_least("orchestrator.max_attempts", o.max_attempts, 1)?;
        at_least("orchestrator.max_stalls", o.max_stalls, 1)?;
        nonzero("orchestrator.subtask_timeout", o.subtask_timeout)?;
        nonzero("orchestrator.task_timeout", o.task_timeout)?;
        at_least(
            "orchestrator.prompt_budget_tokens",
            o.prompt_budget_tokens,
            250,
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
        nonzero("llm.timeout", l.timeout)?;
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

/// Durations as text: `250ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Parses `250ms`, `1.5s`, `30s`, `5m`, `2h` or `30` (seconds).
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration such as 500ms, 30s, 5m"))?;
        let secs = match unit.trim() {
            "ms" => value / 1000.0,
            "" | "s" => value,
            "m" | "min" => value * 60.0,
            "h" => value * 3600.0,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}; use ms, s, m or h"
                ));
            }
        };
        Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
    }

    /// Writes the shortest exact form.
    pub fn format(d: Duration) -> String {
        let ms = d.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            format!("{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            format!("{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    }

    /// Serde: serialise.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// Serde: deserialise from text or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
            Raw::Seconds(s) => Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = TroupeConfig::default();
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TroupeConfig>(&json).unwrap(), c);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            duration::parse("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            duration::parse("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(duration::parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(duration::parse("30").unwrap(), Duration::from_secs(30));
        assert!(duration::parse("5 parsecs").is_err());
        assert!(duration::parse("-1s").is_err());
        assert_eq!(duration::format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration::format(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn unknown_keys_and_bad_bounds_are_refused() {
        let unknown =
            serde_json::from_str::<TroupeConfig>(r#"{"orchestrator": {"max_atempts": 3}}"#);
        assert!(unknown.unwrap_err().to_string().contains("max_atempts"));
        let mut c = TroupeConfig::default();
        c.orchestrator.max_attempts = 0;
        assert_eq!(c.validate().unwrap_err().key, "orchestrator.max_attempts");
        let mut c = TroupeConfig::default();
        c.llm.retry.jitter = 2.0;
        assert_eq!(c.validate().unwrap_err().key, "llm.retry");
    }
}
