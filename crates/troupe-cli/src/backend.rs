//! Turning `--llm`, `--store` and `--bus` into the runtime's parts.
//!
//! This is the one place of the command that reads the environment for
//! credentials and install locations: `OPENAI_API_KEY`, `OPENAI_BASE_URL`,
//! `TROUPE_LLM_API_KEY` (for a URL endpoint), and where the offline model is
//! ([`LocalPaths::resolve`]: `TROUPE_HOME`, `TROUPE_LLAMA_SERVER`, `TROUPE_LOCAL_MODEL`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use troupe::core::bus::{Bus, MemoryBus, MemoryBusConfig};
use troupe::core::llm::LlmProvider;
use troupe::core::store::Stores;
use troupe::{Troupe, TroupeBuilder, TroupeConfig};
use troupe_llm::{
    LocalModelConfig, LocalPaths, LocalServer, OPENAI_BASE_URL, OpenAiClient, OpenAiConfig,
    StructuredOutput,
};
use troupe_redis::{RedisBus, RedisBusConfig};
use troupe_testkit::mock::MockLlm;

use crate::settings::{PostgresSettings, Settings};

/// The call timeout for the local model, unless configured.
const LOCAL_CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// The subtask timeout for the local model, unless configured.
const LOCAL_SUBTASK_TIMEOUT: Duration = Duration::from_secs(1800);

/// Replies asked for one plan from the local model, unless configured.
const LOCAL_PLAN_ATTEMPTS: u32 = 5;

/// The model asked of OpenAI when `--model` is not given.
const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";

/// The LLM in use, and the local server behind it, if Troupe started one.
pub(crate) struct LlmBackend {
    pub(crate) provider: Arc<dyn LlmProvider>,
    server: Option<LocalServer>,
    /// The model's context per request, in tokens, when Troupe knows it.
    context_tokens: Option<u32>,
    /// Whether the model runs on this machine's CPU.
    local: bool,
}

impl LlmBackend {
    /// Stops the local server, if there is one. (Dropping the backend kills it
    /// too; this also waits for it to exit.)
    pub(crate) async fn stop(self) {
        if let Some(server) = self.server {
            server.stop().await;
        }
    }

    fn plain(provider: Arc<dyn LlmProvider>) -> Self {
        Self {
            provider,
            server: None,
            context_tokens: None,
            local: false,
        }
    }

    /// Fits the runtime's settings to the model. Earlier results may fill at
    /// most half of a known context window, leaving room for the instructions
    /// and the reply. A model on this machine's CPU is slow, slower still when
    /// the machine is busy: timeouts left at their defaults (made for hosted
    /// APIs) are raised for it, to 10 minutes per call and 30 per subtask, and
    /// a small model gets 5 replies for a valid plan instead of 3.
    pub(crate) fn fit(&self, config: &mut TroupeConfig) {
        if let Some(context) = self.context_tokens {
            let half = usize::try_from(context / 2).unwrap_or(usize::MAX);
            let budget = &mut config.orchestrator.prompt_budget_tokens;
            *budget = (*budget).min(half);
        }
        if self.local {
            let defaults = TroupeConfig::default();
            if config.llm.timeout == defaults.llm.timeout {
                config.llm.timeout = LOCAL_CALL_TIMEOUT;
            }
            if config.orchestrator.subtask_timeout == defaults.orchestrator.subtask_timeout {
                config.orchestrator.subtask_timeout = LOCAL_SUBTASK_TIMEOUT;
            }
            if config.orchestrator.max_plan_attempts == defaults.orchestrator.max_plan_attempts {
                config.orchestrator.max_plan_attempts = LOCAL_PLAN_ATTEMPTS;
            }
        }
    }
}

/// The `--llm` spec in force: the flag or file, else `openai` when
/// `OPENAI_API_KEY` is set, else `local`.
pub(crate) fn llm_spec(settings: &Settings) -> String {
    match &settings.backend.llm {
        Some(spec) => spec.trim().to_owned(),
        None if env("OPENAI_API_KEY").is_some() => "openai".to_owned(),
        None => "local".to_owned(),
    }
}

/// Builds (and for `local`, starts) the LLM that `spec` names, with `--model`.
async fn llm(spec: &str, settings: &Settings) -> anyhow::Result<LlmBackend> {
    llm_with_model(spec, settings.backend.model.clone(), settings).await
}

/// The LLM a command uses: the provider `spec` names, then the fallbacks
/// (`--fallback-llm`), each with the local server Troupe may have started.
pub(crate) struct Llms {
    primary: LlmBackend,
    fallbacks: Vec<LlmBackend>,
}

impl Llms {
    /// Builds (and for `local`, starts) every provider.
    pub(crate) async fn start(spec: &str, settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            primary: llm(spec, settings).await?,
            fallbacks: fallbacks(settings).await?,
        })
    }

    /// Fits the runtime's settings to the first provider (see [`LlmBackend::fit`]).
    pub(crate) fn fit(&self, config: &mut TroupeConfig) {
        self.primary.fit(config);
    }

    /// A runtime builder with these providers.
    pub(crate) fn builder(&self) -> TroupeBuilder {
        Troupe::builder()
            .llm(self.primary.provider.clone())
            .fallback_llms(self.fallbacks.iter().map(|f| f.provider.clone()))
    }

    /// The providers, primary first, for a runtime built by hand.
    pub(crate) fn providers(&self) -> (Arc<dyn LlmProvider>, Vec<Arc<dyn LlmProvider>>) {
        (
            self.primary.provider.clone(),
            self.fallbacks.iter().map(|f| f.provider.clone()).collect(),
        )
    }

    /// Stops the local servers, if any.
    pub(crate) async fn stop(self) {
        self.primary.stop().await;
        for f in self.fallbacks {
            f.stop().await;
        }
    }
}

/// The fallback providers (`--fallback-llm SPEC[#MODEL]`), in order.
async fn fallbacks(settings: &Settings) -> anyhow::Result<Vec<LlmBackend>> {
    let mut all = Vec::new();
    for entry in &settings.backend.fallback_llm {
        let (spec, model) = match entry.rsplit_once('#') {
            Some((spec, model)) if !model.trim().is_empty() => {
                (spec.trim(), Some(model.trim().to_owned()))
            }
            _ => (entry.trim(), None),
        };
        let backend = llm_with_model(spec, model, settings)
            .await
            .with_context(|| format!("fallback LLM {entry:?}"))?;
        all.push(backend);
    }
    Ok(all)
}

async fn llm_with_model(
    spec: &str,
    model: Option<String>,
    settings: &Settings,
) -> anyhow::Result<LlmBackend> {
    match spec {
        "mock" => Ok(LlmBackend::plain(Arc::new(MockLlm::builtin()))),
        s if s.starts_with("mock:") => {
            let path = Path::new(&s["mock:".len()..]);
            Ok(LlmBackend::plain(Arc::new(MockLlm::from_file(path)?)))
        }
        "local" => local(settings).await,
        "openai" => {
            let key = env("OPENAI_API_KEY").context(
                "--llm openai needs OPENAI_API_KEY in the environment (or use --llm local for the offline model)",
            )?;
            let base = env("OPENAI_BASE_URL").unwrap_or_else(|| OPENAI_BASE_URL.to_owned());
            let model = model.unwrap_or_else(|| DEFAULT_OPENAI_MODEL.to_owned());
            let mut config = OpenAiConfig::new(base, model).with_api_key(key);
            config.name = "openai".to_owned();
            remote(config, settings)
        }
        s if s.starts_with("http://") || s.starts_with("https://") => {
            let model = model.with_context(|| {
                format!("--llm {s} needs --model NAME (the model the server should run; {s}#NAME for a fallback)")
            })?;
            let mut config = OpenAiConfig::new(s, model);
            if let Some(key) = env("TROUPE_LLM_API_KEY") {
                config = config.with_api_key(key);
            }
            remote(config, settings)
        }
        other => bail!(
            "unknown --llm {other:?}: use mock, mock:FILE, local, openai, or an http(s) base URL"
        ),
    }
}

fn remote(mut config: OpenAiConfig, settings: &Settings) -> anyhow::Result<LlmBackend> {
    config.timeout = settings.runtime.llm.timeout;
    config.structured_output = structured_output(settings, StructuredOutput::JsonSchema)?;
    let client = OpenAiClient::new(config)?;
    Ok(LlmBackend::plain(Arc::new(client)))
}

async fn local(settings: &Settings) -> anyhow::Result<LlmBackend> {
    let paths = LocalPaths::resolve(env);
    let mut config = LocalModelConfig::new(paths);
    settings.local.apply(&mut config);
    let server = LocalServer::start(&config).await?;
    let mut client_config = server.client_config();
    // The runtime cuts calls at its own timeout (see `fit`); the client's is a backstop.
    client_config.timeout = settings.runtime.llm.timeout.max(LOCAL_CALL_TIMEOUT);
    client_config.structured_output = structured_output(settings, StructuredOutput::JsonSchema)?;
    let client = OpenAiClient::new(client_config)?;
    Ok(LlmBackend {
        provider: Arc::new(client),
        server: Some(server),
        context_tokens: Some(config.ctx_size),
        local: true,
    })
}

fn structured_output(
    settings: &Settings,
    default: StructuredOutput,
) -> anyhow::Result<StructuredOutput> {
    match &settings.backend.structured_output {
        Some(mode) => mode.parse().map_err(anyhow::Error::msg),
        None => Ok(default),
    }
}

/// A non-empty environment variable.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The bus a `--bus` URL names.
pub(crate) async fn bus(settings: &Settings) -> anyhow::Result<Arc<dyn Bus>> {
    let delivery = &settings.bus;
    match settings.backend.bus.as_deref().unwrap_or("memory") {
        "memory" => {
            let mut config = MemoryBusConfig::default();
            if let Some(v) = delivery.visibility_timeout {
                config.visibility_timeout = v;
            }
            if let Some(n) = delivery.max_deliveries {
                config.max_deliveries = n;
            }
            Ok(Arc::new(MemoryBus::new(config)))
        }
        u if u.starts_with("redis://") || u.starts_with("rediss://") => {
            let mut config = RedisBusConfig::default();
            if let Some(v) = delivery.visibility_timeout {
                config.visibility_timeout = v;
            }
            if let Some(n) = delivery.max_deliveries {
                config.max_deliveries = n;
            }
            if let Some(path) = &delivery.tls_ca_file {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read bus.tls_ca_file {}", path.display()))?;
                config.tls_root_cert_pem = Some(pem);
            }
            let bus = RedisBus::connect(u, config).await.with_context(|| {
                format!("cannot connect to the bus {}", troupe_sql::redact_url(u))
            })?;
            Ok(Arc::new(bus))
        }
        other => bail!("unknown --bus {other:?}: use memory or redis://HOST:PORT"),
    }
}

/// Whether the bus in force lives in this process only (its workers must too).
pub(crate) fn bus_is_local(settings: &Settings) -> bool {
    matches!(settings.backend.bus.as_deref(), None | Some("memory"))
}

/// The stores a `--store` URL names.
pub(crate) async fn stores(url: &str, postgres: &PostgresSettings) -> anyhow::Result<Stores> {
    troupe_sql::open_url_with(url, postgres.options())
        .await
        .with_context(|| format!("cannot open the store {}", troupe_sql::redact_url(url)))
}

/// The stores of an existing database, for commands that only read: a
/// missing SQLite file is an error, not a new empty database.
pub(crate) async fn existing_stores(url: &str) -> anyhow::Result<Stores> {
    if let Some(path) = troupe_sql::sqlite_path(url)
        && !path.exists()
    {
        bail!(
            "there is no database at {} (run a goal first, or pass --store)",
            path.display()
        );
    }
    stores(url, &PostgresSettings::default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_model_gets_room_time_and_repairs_unless_configured() {
        let local = LlmBackend {
            provider: Arc::new(MockLlm::builtin()),
            server: None,
            context_tokens: Some(8_192),
            local: true,
        };
        let mut config = TroupeConfig::default();
        local.fit(&mut config);
        assert_eq!(config.orchestrator.prompt_budget_tokens, 4_096);
        assert_eq!(config.llm.timeout, LOCAL_CALL_TIMEOUT);
        assert_eq!(config.orchestrator.subtask_timeout, LOCAL_SUBTASK_TIMEOUT);
        assert_eq!(config.orchestrator.max_plan_attempts, LOCAL_PLAN_ATTEMPTS);

        // What the user set is kept (the budget only ever shrinks to fit).
        let mut config = TroupeConfig::default();
        config.llm.timeout = Duration::from_secs(30);
        config.orchestrator.max_plan_attempts = 2;
        config.orchestrator.prompt_budget_tokens = 1_000;
        local.fit(&mut config);
        assert_eq!(config.llm.timeout, Duration::from_secs(30));
        assert_eq!(config.orchestrator.max_plan_attempts, 2);
        assert_eq!(config.orchestrator.prompt_budget_tokens, 1_000);

        // A hosted model is left alone.
        let mut config = TroupeConfig::default();
        LlmBackend::plain(Arc::new(MockLlm::builtin())).fit(&mut config);
        assert_eq!(config, TroupeConfig::default());
    }
}
