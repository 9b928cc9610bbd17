//! [`MockLlm`]: a scripted, deterministic [`LlmProvider`] with error injection.
//!
//! With no script it gives built-in replies: a valid plan for any goal, a
//! result for any subtask, a synthesis. A [`Script`] overrides chosen calls
//! (malformed JSON, HTTP errors, timeouts, hangs, slow replies) and injects
//! random faults into a share of calls; `--llm mock:FILE` loads one from JSON.

mod builtin;
pub mod script;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use troupe_core::llm::{CallMeta, ChatRequest, ChatResponse, LlmError, LlmProvider};
use troupe_core::task::Usage;

pub use script::{Fault, MockError, Otherwise, Rule, Script, ScriptError};

/// One call the mock answered, kept when recording is on.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// The request.
    pub request: ChatRequest,
    /// When the call came in.
    pub started: Instant,
    /// When it returned.
    pub finished: Instant,
    /// The reply text, or the error's class.
    pub outcome: Result<String, &'static str>,
}

impl RecordedCall {
    /// The call's metadata.
    pub fn meta(&self) -> &CallMeta {
        &self.request.meta
    }
}

/// A scripted mock LLM.
///
/// ```
/// use troupe_core::llm::{CallKind, ChatMessage, ChatRequest, LlmProvider};
/// use troupe_llm::mock::{MockError, MockLlm, Rule};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let llm = MockLlm::builder()
///     .rule(Rule::on(CallKind::Plan).reply("not json"))
///     .rule(Rule::on(CallKind::Plan).error(MockError::http(503)))
///     .build()
///     .unwrap();
/// let ask = || ChatRequest::new(CallKind::Plan, vec![ChatMessage::user("Goal: tea")]);
/// assert_eq!(llm.complete(ask()).await.unwrap().content, "not json");
/// assert!(llm.complete(ask()).await.unwrap_err().is_retryable());
/// // The script is used up: the built-in reply is a valid plan.
/// assert!(llm.complete(ask()).await.unwrap().content.contains("\"subtasks\""));
/// # });
/// ```
#[derive(Debug)]
pub struct MockLlm {
    script: Script,
    state: Mutex<State>,
    record: bool,
}

#[derive(Debug)]
struct State {
    /// Calls each rule may still answer (`None`: unlimited).
    remaining: Vec<Option<u32>>,
    rng: fastrand::Rng,
    calls: Vec<RecordedCall>,
    count: u64,
}

/// Builds a [`MockLlm`].
#[derive(Debug, Default)]
pub struct MockLlmBuilder {
    script: Script,
    record: bool,
}

impl MockLlmBuilder {
    /// Adds a scripted rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.script.rules.push(rule);
        self
    }

    /// Adds a random fault.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.script.faults.push(fault);
        self
    }

    /// Seeds the random faults.
    pub fn seed(mut self, seed: u64) -> Self {
        self.script.seed = seed;
        self
    }

    /// Waits this long before every reply that has no delay of its own.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.script.delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Fails calls no rule answers, instead of giving built-in replies.
    pub fn otherwise_fail(mut self) -> Self {
        self.script.otherwise = Otherwise::Fail;
        self
    }

    /// Keeps every call for inspection with [`MockLlm::calls`].
    pub fn record(mut self) -> Self {
        self.record = true;
        self
    }

    /// The mock, or why the script is invalid.
    pub fn build(self) -> Result<MockLlm, ScriptError> {
        MockLlm::from_script(self.script, self.record)
    }
}

impl MockLlm {
    /// A builder for a scripted mock.
    pub fn builder() -> MockLlmBuilder {
        MockLlmBuilder::default()
    }

    /// A mock that gives the built-in replies to every call, without recording.
    pub fn builtin() -> Self {
        Self::new_unchecked(Script::default(), false)
    }

    /// A mock following `script`.
    pub fn from_script(script: Script, record: bool) -> Result<Self, ScriptError> {
        script.check()?;
        Ok(Self::new_unchecked(script, record))
    }

    /// A mock following the JSON script in `path`.
    pub fn from_file(path: &Path) -> Result<Self, ScriptError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: shown.clone(),
            source,
        })?;
        let script: Script = serde_json::from_str(&text).map_err(|e| ScriptError::Parse {
            path: shown,
            message: e.to_string(),
        })?;
        Self::from_script(script, false)
    }

    fn new_unchecked(script: Script, record: bool) -> Self {
        let remaining = script
            .rules
            .iter()
            .map(|s| {
                if s.repeat {
                    None
                } else {
                    Some(s.times.unwrap_or(1))
                }
            })
            .collect();
        let rng = fastrand::Rng::with_seed(script.seed);
        Self {
            script,
            state: Mutex::new(State {
                remaining,
                rng,
                calls: Vec::new(),
                count: 0,
            }),
            record,
        }
    }

    /// Every call answered so far (empty unless built with recording).
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.lock().calls.clone()
    }

    /// How many calls were made.
    pub fn call_count(&self) -> u64 {
        self.lock().count
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement, so a poisoned lock is safe to reuse.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides the answer to a call: the first matching rule, else a fault, else the default.
    fn choose(&self, meta: &CallMeta) -> Option<Rule> {
        let mut state = self.lock();
        state.count += 1;
        for (i, rule) in self.script.rules.iter().enumerate() {
            if !rule.matches(meta) {
                continue;
            }
            match &mut state.remaining[i] {
                None => return Some(rule.clone()),
                Some(0) => {}
                Some(n) => {
                    *n -= 1;
                    return Some(rule.clone());
                }
            }
        }
        for fault in &self.script.faults {
            if fault.matches(meta) && state.rng.f64() < fault.rate {
                return Some(Rule {
                    error: Some(fault.error.clone()),
                    ..Rule::default()
                });
            }
        }
        None
    }
}

#[async_trait]
impl LlmProvider for MockLlm {
    fn name(&self) -> &str {
        "mock"
    }

    fn model(&self) -> Option<&str> {
        Some(&self.script.model)
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let rule = self.choose(&request.meta);
        let usage = rule.as_ref().and_then(|r| r.usage);
        let delay = rule
            .as_ref()
            .and_then(|s| s.delay_ms)
            .unwrap_or(self.script.delay_ms);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let outcome = match rule {
            Some(Rule { hang: true, .. }) => std::future::pending().await,
            Some(Rule { error: Some(e), .. }) => Err(e.to_llm_error()),
            Some(Rule {
                reply: Some(text), ..
            }) => Ok(text),
            Some(Rule {
                plan: Some(plan), ..
            }) => Ok(plan.to_string()),
            Some(_) => Ok(builtin::reply(&request)),
            None if self.script.otherwise == Otherwise::Fail => Err(LlmError::BadRequest {
                status: 400,
                body: format!(
                    "the mock script has no reply for this {} call",
                    request.meta.kind.as_str()
                ),
            }),
            None => Ok(builtin::reply(&request)),
        };
        if self.record {
            let call = RecordedCall {
                request: request.clone(),
                started,
                finished: Instant::now(),
                outcome: match &outcome {
                    Ok(text) => Ok(text.clone()),
                    Err(e) => Err(e.class()),
                },
            };
            self.lock().calls.push(call);
        }
        let content = outcome?;
        let prompt_chars: usize = request.messages.iter().map(|m| m.content.len()).sum();
        Ok(ChatResponse {
            usage: usage.unwrap_or(Usage {
                prompt_tokens: tokens(prompt_chars),
                completion_tokens: tokens(content.len()),
            }),
            content,
            model: self.script.model.clone(),
            finish_reason: Some("stop".to_owned()),
        })
    }
}

/// A rough token count: four characters a token, as a tokenizer gives for English.
fn tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use troupe_core::llm::{CallKind, ChatMessage};
    use troupe_core::plan::{PlanContext, PlanParser};
    use troupe_core::role::{BuiltinRole, RoleInfo};

    use super::*;

    fn plan_request(revision: u32) -> ChatRequest {
        let mut r = ChatRequest::new(
            CallKind::Plan,
            vec![ChatMessage::user("Goal: bake bread\nMore")],
        );
        r.meta.revision = revision;
        r
    }

    #[tokio::test]
    async fn builtin_plans_are_valid() {
        let parser = PlanParser::new(BuiltinRole::ALL.map(RoleInfo::from).to_vec(), 8).unwrap();
        let llm = MockLlm::builtin();
        let reply = llm.complete(plan_request(0)).await.unwrap();
        let plan = parser
            .parse(&reply.content, &PlanContext::default())
            .unwrap();
        assert_eq!(plan.subtasks.len(), 3);
        assert!(plan.subtasks[0].instruction.contains("bake bread"));
        assert!(reply.usage.prompt_tokens > 0 && reply.usage.completion_tokens > 0);
        let replan = llm.complete(plan_request(2)).await.unwrap();
        assert!(replan.content.contains("\"r2s1\""));
    }

    #[tokio::test]
    async fn rules_are_used_in_order_then_the_builtin_reply() {
        let llm = MockLlm::builder()
            .rule(Rule::on(CallKind::Work).role("coder").reply("a").times(2))
            .rule(Rule::on(CallKind::Work).reply("b"))
            .record()
            .build()
            .unwrap();
        let mut req = ChatRequest::new(CallKind::Work, vec![ChatMessage::user("Instruction: x")]);
        req.meta.role = Some("coder".parse().unwrap());
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(llm.complete(req.clone()).await.unwrap().content);
        }
        assert_eq!(got[..3], ["a", "a", "b"]);
        assert!(got[3].contains("by the coder: x"), "{}", got[3]);
        assert_eq!(llm.calls().len(), 4);
    }

    #[tokio::test]
    async fn faults_hit_about_their_rate_and_repeat_for_a_seed() {
        let make = || {
            MockLlm::builder()
                .fault(Fault::on(CallKind::Work, 0.3, MockError::http(500)))
                .seed(7)
                .build()
                .unwrap()
        };
        let run = |llm: MockLlm| async move {
            let mut failures = Vec::new();
            for i in 0..1000 {
                let req = ChatRequest::new(CallKind::Work, vec![]);
                if llm.complete(req).await.is_err() {
                    failures.push(i);
                }
            }
            failures
        };
        let a = run(make()).await;
        assert!((250..350).contains(&a.len()), "{} failures", a.len());
        assert_eq!(a, run(make()).await);
    }

    #[test]
    fn scripts_are_checked() {
        let bad: Script =
            serde_json::from_str(r#"{"rules": [{"reply": "x", "hang": true}]}"#).unwrap();
        assert!(
            MockLlm::from_script(bad, false)
                .unwrap_err()
                .to_string()
                .contains("rule 1")
        );
        let unknown = serde_json::from_str::<Script>(r#"{"steps": [{"replly": "x"}]}"#);
        assert!(unknown.is_err());
        let rate: Script =
            serde_json::from_str(r#"{"faults": [{"rate": 2, "error": {"type": "timeout"}}]}"#)
                .unwrap();
        assert!(MockLlm::from_script(rate, false).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn errors_delays_and_fail_mode() {
        let llm = MockLlm::builder()
            .rule(
                Rule::on(CallKind::Plan)
                    .delay(Duration::from_secs(2))
                    .error(MockError::Http {
                        status: 429,
                        body: String::new(),
                        retry_after_ms: Some(1500),
                    }),
            )
            .otherwise_fail()
            .build()
            .unwrap();
        let t = Instant::now();
        let err = llm.complete(plan_request(0)).await.unwrap_err();
        assert_eq!(t.elapsed(), Duration::from_secs(2));
        assert_eq!(err.retry_after(), Some(Duration::from_millis(1500)));
        let err = llm.complete(plan_request(0)).await.unwrap_err();
        assert!(!err.is_retryable());
    }
}
