//! The runtime's configuration: one typed tree with defaults, unknown keys
//! rejected, and a check of every bound. Binaries fill it from a file, the
//! environment and flags; the library never reads the environment itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_core::llm::ModelHints;

pub mod duration;
mod validate;

pub use validate::ConfigError;

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
    /// A task's state is checkpointed at every status change and after its
    /// driver has handled this many replies and timers.
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
    /// Replies asked of the LLM for one plan before giving up (the first and
    /// the repairs). Unset: the model's hint, else 3 (see
    /// [`max_plan_attempts`](Self::max_plan_attempts())).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_plan_attempts: Option<u32>,
    /// The most subtasks a plan may have.
    pub max_subtasks: usize,
    /// Attempts per subtask before it fails for good.
    pub max_attempts: u32,
    /// How long a worker has for one attempt. Unset: the model's hint, else 5m.
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub subtask_timeout: Option<Duration>,
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
    /// Unset: 6,000, or half the model's context when that is less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_budget_tokens: Option<usize>,
    /// The longest goal accepted, in characters.
    pub max_goal_chars: usize,
}

/// Replies asked for one plan when neither the user nor the model says.
pub const DEFAULT_PLAN_ATTEMPTS: u32 = 3;
/// A worker's time for one attempt when neither the user nor the model says.
pub const DEFAULT_SUBTASK_TIMEOUT: Duration = Duration::from_secs(300);
/// The prompt budget when neither the user nor the model's context says.
pub const DEFAULT_PROMPT_BUDGET_TOKENS: usize = 6_000;
/// The smallest prompt budget accepted.
pub const MIN_PROMPT_BUDGET_TOKENS: usize = 250;
/// An LLM call's time when neither the user nor the model says.
pub const DEFAULT_LLM_TIMEOUT: Duration = Duration::from_secs(120);

impl OrchestratorConfig {
    /// Replies asked for one plan: as set, else [`DEFAULT_PLAN_ATTEMPTS`].
    pub fn max_plan_attempts(&self) -> u32 {
        self.max_plan_attempts.unwrap_or(DEFAULT_PLAN_ATTEMPTS)
    }

    /// A worker's time for one attempt: as set, else [`DEFAULT_SUBTASK_TIMEOUT`].
    pub fn subtask_timeout(&self) -> Duration {
        self.subtask_timeout.unwrap_or(DEFAULT_SUBTASK_TIMEOUT)
    }

    /// The prompt budget in tokens: as set, else [`DEFAULT_PROMPT_BUDGET_TOKENS`].
    pub fn prompt_budget_tokens(&self) -> usize {
        self.prompt_budget_tokens
            .unwrap_or(DEFAULT_PROMPT_BUDGET_TOKENS)
    }

    /// The prompt budget in characters.
    pub fn prompt_budget_chars(&self) -> usize {
        self.prompt_budget_tokens().saturating_mul(CHARS_PER_TOKEN)
    }
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            max_plan_attempts: None,
            max_subtasks: 12,
            max_attempts: 3,
            subtask_timeout: None,
            task_timeout: Duration::from_secs(3600),
            max_replans: 1,
            max_stalls: 3,
            evaluate_progress: true,
            role_breaker: BreakerConfig::default(),
            retry: BackoffConfig::default(),
            prompt_budget_tokens: None,
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
    /// How long one call may take. Unset: the model's hint, else 2m (see
    /// [`timeout`](Self::timeout())).
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
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

impl LlmCallConfig {
    /// How long one call may take: as set, else [`DEFAULT_LLM_TIMEOUT`].
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_LLM_TIMEOUT)
    }
}

impl Default for LlmCallConfig {
    fn default() -> Self {
        Self {
            timeout: None,
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

impl TroupeConfig {
    /// This configuration with the model's `hints` filled in wherever the
    /// user set nothing: a slow local model gets longer timeouts and more
    /// tries for a plan, a known context window bounds the prompt budget (at
    /// most half of it, leaving room for the instructions and the reply).
    /// What the user set is always kept.
    ///
    /// ```
    /// use std::time::Duration;
    /// use troupe::TroupeConfig;
    /// use troupe::core::llm::ModelHints;
    ///
    /// let hints = ModelHints {
    ///     context_tokens: Some(8_192),
    ///     subtask_timeout: Some(Duration::from_secs(1800)),
    ///     ..ModelHints::default()
    /// };
    /// let mut mine = TroupeConfig::default();
    /// mine.orchestrator.subtask_timeout = Some(Duration::from_secs(60));
    /// let fitted = mine.with_hints(&hints);
    /// assert_eq!(fitted.orchestrator.subtask_timeout(), Duration::from_secs(60));
    /// assert_eq!(fitted.orchestrator.prompt_budget_tokens(), 4_096);
    /// ```
    pub fn with_hints(mut self, hints: &ModelHints) -> Self {
        let o = &mut self.orchestrator;
        o.max_plan_attempts = o.max_plan_attempts.or(hints.plan_attempts);
        o.subtask_timeout = o.subtask_timeout.or(hints.subtask_timeout);
        o.prompt_budget_tokens = o.prompt_budget_tokens.or_else(|| {
            let half = usize::try_from(hints.context_tokens? / 2).unwrap_or(usize::MAX);
            Some(half.clamp(MIN_PROMPT_BUDGET_TOKENS, DEFAULT_PROMPT_BUDGET_TOKENS))
        });
        self.llm.timeout = self.llm.timeout.or(hints.call_timeout);
        self
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
    fn hints_fill_what_the_user_left_unset_and_nothing_else() {
        let local = ModelHints {
            context_tokens: Some(8_192),
            call_timeout: Some(Duration::from_secs(600)),
            subtask_timeout: Some(Duration::from_secs(1800)),
            plan_attempts: Some(5),
        };
        let fitted = TroupeConfig::default().with_hints(&local);
        assert_eq!(fitted.orchestrator.prompt_budget_tokens(), 4_096);
        assert_eq!(fitted.llm.timeout(), Duration::from_secs(600));
        assert_eq!(
            fitted.orchestrator.subtask_timeout(),
            Duration::from_secs(1800)
        );
        assert_eq!(fitted.orchestrator.max_plan_attempts(), 5);
        fitted.validate().unwrap();

        // An explicit value is kept even when it equals the default.
        let mut mine = TroupeConfig::default();
        mine.llm.timeout = Some(DEFAULT_LLM_TIMEOUT);
        mine.orchestrator.max_plan_attempts = Some(2);
        mine.orchestrator.prompt_budget_tokens = Some(7_000);
        let fitted = mine.with_hints(&local);
        assert_eq!(fitted.llm.timeout(), DEFAULT_LLM_TIMEOUT);
        assert_eq!(fitted.orchestrator.max_plan_attempts(), 2);
        assert_eq!(fitted.orchestrator.prompt_budget_tokens(), 7_000);

        // No hints: the defaults.
        let plain = TroupeConfig::default().with_hints(&ModelHints::default());
        assert_eq!(plain, TroupeConfig::default());
        assert_eq!(
            plain.orchestrator.subtask_timeout(),
            DEFAULT_SUBTASK_TIMEOUT
        );
        // A tiny context still leaves a budget the checks accept.
        let tiny = ModelHints {
            context_tokens: Some(300),
            ..ModelHints::default()
        };
        TroupeConfig::default()
            .with_hints(&tiny)
            .validate()
            .unwrap();
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
