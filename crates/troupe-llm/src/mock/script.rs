//! The script a [`MockLlm`](super::MockLlm) follows: rules matched in order,
//! random faults, and what to do when nothing matches. It is the format of
//! `--llm mock:FILE` (JSON), and the builder API writes the same structure.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_core::llm::{CallKind, CallMeta, LlmError};
use troupe_core::task::Usage;

/// A whole script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The model name replies carry.
    #[serde(default = "default_model")]
    pub model: String,
    /// Seed of the random faults.
    #[serde(default)]
    pub seed: u64,
    /// A delay before every reply that has none of its own, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Scripted replies, matched in order; each is used `times` times.
    #[serde(default)]
    #[serde(alias = "steps")]
    pub rules: Vec<Rule>,
    /// Errors injected at random into matching calls that no rule answered.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// What to do when no rule matches.
    #[serde(default)]
    pub otherwise: Otherwise,
}

fn default_model() -> String {
    "mock".to_owned()
}

impl Default for Script {
    fn default() -> Self {
        Self {
            model: default_model(),
            seed: 0,
            delay_ms: 0,
            rules: Vec::new(),
            faults: Vec::new(),
            otherwise: Otherwise::default(),
        }
    }
}

/// What to do with a call no rule answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Otherwise {
    /// Give the built-in deterministic reply (a valid plan, a work result, a synthesis).
    #[default]
    Builtin,
    /// Fail the call with a permanent error.
    Fail,
}

/// Whether a call matches a rule's or fault's filters; a filter left out matches anything.
fn matches(
    kind: Option<CallKind>,
    role: Option<&str>,
    subtask: Option<&str>,
    meta: &CallMeta,
) -> bool {
    kind.is_none_or(|k| k == meta.kind)
        && role.is_none_or(|r| meta.role.as_ref().is_some_and(|m| m.as_str() == r))
        && subtask.is_none_or(|s| meta.subtask_id.as_ref().is_some_and(|m| m.as_str() == s))
}

/// One scripted reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Only calls for this purpose (`plan`, `replan`, `work`, `synthesize`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CallKind>,
    /// Only calls from workers of this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Only calls for this subtask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtask: Option<String>,
    /// How many calls it answers (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// Answer every matching call from now on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
    /// Wait this long first, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Reply with this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Reply with this JSON (serialised), typically a plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<serde_json::Value>,
    /// Fail with this error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MockError>,
    /// Never answer (the caller's timeout must cut the call).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hang: bool,
    /// Report these tokens instead of a count from the text's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl Rule {
    /// A rule answering calls of `kind` with the built-in reply.
    pub fn on(kind: CallKind) -> Self {
        Self {
            kind: Some(kind),
            ..Self::default()
        }
    }

    /// A rule answering any call with the built-in reply.
    pub fn any() -> Self {
        Self::default()
    }

    /// Only calls from workers of `role`.
    pub fn role(mut self, role: &str) -> Self {
        self.role = Some(role.to_owned());
        self
    }

    /// Only calls for subtask `id`.
    pub fn subtask(mut self, id: &str) -> Self {
        self.subtask = Some(id.to_owned());
        self
    }

    /// Reply with `text`.
    pub fn reply(mut self, text: impl Into<String>) -> Self {
        self.reply = Some(text.into());
        self
    }

    /// Reply with `value` serialised as JSON.
    pub fn plan(mut self, value: serde_json::Value) -> Self {
        self.plan = Some(value);
        self
    }

    /// Fail with `error`.
    pub fn error(mut self, error: MockError) -> Self {
        self.error = Some(error);
        self
    }

    /// Report `usage` for the reply.
    pub fn usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Never answer.
    pub fn hang(mut self) -> Self {
        self.hang = true;
        self
    }

    /// Wait `delay` before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Answer `n` calls.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Answer every matching call.
    pub fn repeat(mut self) -> Self {
        self.repeat = true;
        self
    }

    /// Whether the rule answers a call with this metadata.
    pub fn matches(&self, meta: &CallMeta) -> bool {
        matches(
            self.kind,
            self.role.as_deref(),
            self.subtask.as_deref(),
            meta,
        )
    }

    /// Checks that the rule says one thing.
    pub(crate) fn check(&self, index: usize) -> Result<(), ScriptError> {
        let outcomes = [
            self.reply.is_some(),
            self.plan.is_some(),
            self.error.is_some(),
            self.hang,
        ];
        if outcomes.into_iter().filter(|o| *o).count() > 1 {
            return Err(ScriptError::Invalid(format!(
                "rule {index}: give at most one of reply, plan, error, hang"
            )));
        }
        if self.times == Some(0) {
            return Err(ScriptError::Invalid(format!(
                "rule {index}: times must be at least 1"
            )));
        }
        if let Some(e) = &self.error {
            e.check()
                .map_err(|m| ScriptError::Invalid(format!("rule {index}: {m}")))?;
        }
        Ok(())
    }
}

/// An error injected at random into a share of the matching calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Only calls for this purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CallKind>,
    /// Only calls from workers of this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The share of matching calls that fail, from 0 to 1.
    pub rate: f64,
    /// The error they fail with.
    pub error: MockError,
}

/// An error a mock call fails with, as in the script file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MockError {
    /// An HTTP error status, classified as a real provider's would be.
    Http {
        /// The status code.
        status: u16,
        /// The response body.
        #[serde(default)]
        body: String,
        /// A `Retry-After`, in milliseconds.
        #[serde(default)]
        retry_after_ms: Option<u64>,
    },
    /// The call timed out.
    Timeout,
    /// The connection failed.
    Transport,
    /// HTTP 200 with no content.
    Empty,
    /// The prompt is too long for the model.
    ContextLength,
}

impl Fault {
    /// A fault failing `rate` of the calls of `kind` with `error`.
    pub fn on(kind: CallKind, rate: f64, error: MockError) -> Self {
        Self {
            kind: Some(kind),
            role: None,
            rate,
            error,
        }
    }

    /// Whether the fault may hit a call with this metadata.
    pub fn matches(&self, meta: &CallMeta) -> bool {
        matches(self.kind, self.role.as_deref(), None, meta)
    }
}

impl MockError {
    /// An HTTP error with this status.
    pub fn http(status: u16) -> Self {
        MockError::Http {
            status,
            body: format!("mock HTTP {status}"),
            retry_after_ms: None,
        }
    }

    fn check(&self) -> Result<(), String> {
        match self {
            MockError::Http { status, .. } if !(400..=599).contains(status) => Err(format!(
                "HTTP error status {status} is not between 400 and 599"
            )),
            _ => Ok(()),
        }
    }

    /// The error a real provider would give.
    pub fn to_llm_error(&self) -> LlmError {
        match self {
            MockError::Http {
                status: 429,
                body,
                retry_after_ms,
            } => LlmError::RateLimited {
                status: 429,
                retry_after: retry_after_ms.map(Duration::from_millis),
                body: body.clone(),
            },
            MockError::Http {
                status: status @ (401 | 403),
                body,
                ..
            } => LlmError::Auth {
                status: *status,
                body: body.clone(),
            },
            MockError::Http { status, body, .. } if *status >= 500 => LlmError::Server {
                status: *status,
                body: body.clone(),
            },
            MockError::Http { status, body, .. } => LlmError::BadRequest {
                status: *status,
                body: body.clone(),
            },
            MockError::Timeout => LlmError::Timeout(Duration::from_secs(30)),
            MockError::Transport => LlmError::Transport("mock connection reset".into()),
            MockError::Empty => LlmError::InvalidResponse {
                reason: "the response has no content".into(),
                body: r#"{"choices":[]}"#.into(),
            },
            MockError::ContextLength => LlmError::ContextLength {
                status: 400,
                body: "mock: maximum context length exceeded".into(),
            },
        }
    }
}

/// A script that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The file could not be read.
    #[error("cannot read mock script {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The JSON does not parse or does not fit the format.
    #[error("mock script {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A rule or fault says something impossible.
    #[error("mock script is not valid: {0}")]
    Invalid(String),
}

impl Script {
    /// Checks every rule and fault.
    pub fn check(&self) -> Result<(), ScriptError> {
        for (i, rule) in self.rules.iter().enumerate() {
            rule.check(i + 1)?;
        }
        for (i, fault) in self.faults.iter().enumerate() {
            if !(0.0..=1.0).contains(&fault.rate) {
                return Err(ScriptError::Invalid(format!(
                    "fault {}: rate {} is not between 0 and 1",
                    i + 1,
                    fault.rate
                )));
            }
            fault
                .error
                .check()
                .map_err(|m| ScriptError::Invalid(format!("fault {}: {m}", i + 1)))?;
        }
        Ok(())
    }
}
