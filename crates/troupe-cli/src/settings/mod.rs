//! The configuration of one command: one typed tree, read once, from three
//! layers: the file < the environment < the flags.
//!
//! The file is TOML: `[backend]` (`llm`, `fallback_llm`, `model`, `store`,
//! `bus`, `structured_output`), `[local]` (the offline model's server),
//! `[bus]` (delivery settings), `[postgres]` (the PostgreSQL store's
//! connections), the runtime's tables (`[orchestrator]`, `[workers]`,
//! `[llm]`, `[retry]`, `[coordinator]`) and the telemetry tables (`[log]`,
//! `[traces]`); unknown keys are refused. Every key can also be set by an
//! environment variable `TROUPE_SECTION__KEY` (see [`layers`]); the flags
//! (and their short variables, `TROUPE_LLM`, `TROUPE_STORE`, ...) come last.

mod layers;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use toml::Table;
use troupe::TroupeConfig;
use troupe::config::{
    CoordinatorConfig, LlmCallConfig, OrchestratorConfig, RetryConfig, WorkersConfig, duration,
};
use troupe_llm::{LocalModelConfig, StructuredOutput};
use troupe_redis::BusOptions;
use troupe_sql::PostgresOptions;

use crate::cli::BackendArgs;
use crate::telemetry::{LogSettings, TraceSettings};

/// The default store: a SQLite file in the working directory.
pub(crate) const DEFAULT_STORE: &str = "sqlite://troupe.db";

/// Everything a command can be told.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Settings {
    /// Where the LLM, the ledgers and the messages live.
    pub(crate) backend: BackendSettings,
    /// The offline model's server.
    pub(crate) local: LocalSettings,
    /// How the bus delivers.
    pub(crate) bus: BusSettings,
    /// How a PostgreSQL store connects.
    pub(crate) postgres: PostgresSettings,
    /// Log lines.
    pub(crate) log: LogSettings,
    /// Traces.
    pub(crate) traces: TraceSettings,
    orchestrator: OrchestratorConfig,
    workers: WorkersConfig,
    llm: LlmCallConfig,
    retry: RetryConfig,
    coordinator: CoordinatorConfig,
}

/// The `[backend]` table, which the flags `--llm`, `--store`, ... override.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BackendSettings {
    /// The LLM spec (`mock`, `mock:FILE`, `local`, `openai`, a URL).
    pub(crate) llm: Option<String>,
    /// Fallback providers, `SPEC` or `SPEC#MODEL`, in order.
    pub(crate) fallback_llm: Vec<String>,
    /// The model name for the LLM.
    pub(crate) model: Option<String>,
    /// The store URL.
    pub(crate) store: Option<String>,
    /// The bus URL.
    pub(crate) bus: Option<String>,
    /// How the LLM server is held to JSON (`json_schema`, `json_object`, `prompt`).
    pub(crate) structured_output: Option<String>,
}

impl BackendSettings {
    /// The structured-output mode, if one is set (checked when loading).
    pub(crate) fn structured_output(&self) -> Option<StructuredOutput> {
        self.structured_output.as_deref()?.parse().ok()
    }
}

/// How the bus delivers (`[bus]`); unset keys keep the bus's defaults (60 s
/// and 5 deliveries). The visibility timeout is how long a message taken by a
/// worker that died waits before another worker gets it: the recovery time
/// after a crash. Busy workers extend it every `workers.heartbeat`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BusSettings {
    /// How long a delivery stays invisible to other consumers before redelivery.
    #[serde(with = "duration::option")]
    visibility_timeout: Option<Duration>,
    /// Deliveries after which a message goes to the dead letters.
    max_deliveries: Option<u32>,
    /// For `rediss://`: a PEM file with the certificate of the authority that
    /// signed the server's certificate (a private CA), trusted instead of the
    /// system's roots.
    tls_ca_file: Option<std::path::PathBuf>,
    /// What every Redis key starts with (`troupe:` by default): deployments
    /// sharing one Redis need different prefixes.
    key_prefix: Option<String>,
}

impl BusSettings {
    /// The options `troupe_redis::open_url` takes.
    pub(crate) fn options(&self) -> BusOptions {
        BusOptions {
            visibility_timeout: self.visibility_timeout,
            max_deliveries: self.max_deliveries,
            tls_ca_file: self.tls_ca_file.clone(),
            key_prefix: self.key_prefix.clone(),
        }
    }

    fn validate(&self, workers: &WorkersConfig) -> anyhow::Result<()> {
        if let Some(v) = self.visibility_timeout {
            if v < Duration::from_millis(100) {
                anyhow::bail!(
                    "invalid configuration: bus.visibility_timeout is {}; it must be at least 100ms",
                    duration::format(v)
                );
            }
            if workers.heartbeat * 2 > v {
                anyhow::bail!(
                    "invalid configuration: workers.heartbeat ({}) must be at most half of bus.visibility_timeout ({}), or busy workers lose their messages",
                    duration::format(workers.heartbeat),
                    duration::format(v)
                );
            }
        }
        if self.max_deliveries == Some(0) {
            anyhow::bail!("invalid configuration: bus.max_deliveries must be at least 1");
        }
        Ok(())
    }
}

/// How a PostgreSQL store connects (`[postgres]`); unset keys keep
/// [`PostgresOptions`]'s defaults (2 writers, 10 connections for reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PostgresSettings {
    /// Writer tasks, each committing batches of writes on its own connection.
    writers: Option<usize>,
    /// The most connections the pool for reads opens.
    max_connections: Option<u32>,
}

impl PostgresSettings {
    /// The store's options: the defaults, with the keys that are set laid over them.
    pub(crate) fn options(&self) -> PostgresOptions {
        let mut options = PostgresOptions::default();
        if let Some(v) = self.writers {
            options.writers = v;
        }
        if let Some(v) = self.max_connections {
            options.max_connections = v;
        }
        options
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(v) = self.writers
            && !(1..=64).contains(&v)
        {
            anyhow::bail!("invalid configuration: postgres.writers is {v}; it must be 1 to 64");
        }
        if let Some(v) = self.max_connections
            && !(1..=1000).contains(&v)
        {
            anyhow::bail!(
                "invalid configuration: postgres.max_connections is {v}; it must be 1 to 1000"
            );
        }
        Ok(())
    }
}

/// How the offline model's `llama-server` runs (`[local]`); unset keys keep
/// [`LocalModelConfig`]'s defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LocalSettings {
    /// Context of each request, in tokens.
    ctx_size: Option<u32>,
    /// Requests served at once.
    parallel: Option<u32>,
    /// CPU threads.
    threads: Option<u32>,
    /// The most tokens one reply may have.
    max_tokens: Option<u32>,
    /// How long loading may take.
    #[serde(with = "duration::option")]
    startup_timeout: Option<Duration>,
}

impl LocalSettings {
    /// Lays the keys that are set over `config`.
    pub(crate) fn apply(&self, config: &mut LocalModelConfig) {
        if let Some(v) = self.ctx_size {
            config.ctx_size = v;
        }
        if let Some(v) = self.parallel {
            config.parallel = v;
        }
        if self.threads.is_some() {
            config.threads = self.threads;
        }
        if let Some(v) = self.max_tokens {
            config.max_tokens = v;
        }
        if let Some(v) = self.startup_timeout {
            config.startup_timeout = v;
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (key, value, min) in [
            ("local.ctx_size", self.ctx_size, 512),
            ("local.parallel", self.parallel, 1),
            ("local.threads", self.threads, 1),
            ("local.max_tokens", self.max_tokens, 1),
        ] {
            if let Some(v) = value
                && v < min
            {
                anyhow::bail!("invalid configuration: {key} is {v}; it must be at least {min}");
            }
        }
        Ok(())
    }
}

impl Settings {
    /// Reads the file (if any), lays the environment's `TROUPE_*__*`
    /// variables and then the flags over it, and checks the result.
    pub(crate) fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &BackendArgs,
    ) -> anyhow::Result<Self> {
        let text = match file {
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the configuration file {}", path.display())
            })?),
            None => None,
        };
        let shown = file.map(|p| p.display().to_string()).unwrap_or_default();
        Self::from_sources(text.as_deref().map(|t| (shown.as_str(), t)), env, flags)
    }

    /// [`load`](Self::load) from the file's name and text.
    fn from_sources(
        file: Option<(&str, &str)>,
        env: &[(String, String)],
        flags: &BackendArgs,
    ) -> anyhow::Result<Self> {
        let mut tree = match file {
            Some((name, text)) => {
                let table: Table = text
                    .parse()
                    .with_context(|| format!("the configuration file {name} is invalid"))?;
                // Read alone first, so that an error names the file.
                Self::read(table.clone())
                    .with_context(|| format!("the configuration file {name} is invalid"))?;
                table
            }
            None => Table::new(),
        };
        for key in layers::env_keys(env) {
            layers::merge(&mut tree, env_value(&key)?);
        }
        layers::merge(&mut tree, flag_table(flags));
        let settings = Self::read(tree)?;
        settings.validate()?;
        Ok(settings)
    }

    fn read(tree: Table) -> anyhow::Result<Self> {
        Ok(toml::Value::Table(tree).try_into::<Settings>()?)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(mode) = &self.backend.structured_output {
            mode.parse::<StructuredOutput>()
                .map_err(anyhow::Error::msg)?;
        }
        self.runtime().validate()?;
        self.local.validate()?;
        self.bus.validate(&self.workers)?;
        self.postgres.validate()?;
        Ok(())
    }

    /// The runtime's part of the tree (before any model hints).
    pub(crate) fn runtime(&self) -> TroupeConfig {
        TroupeConfig {
            orchestrator: self.orchestrator.clone(),
            workers: self.workers.clone(),
            llm: self.llm.clone(),
            retry: self.retry.clone(),
            coordinator: self.coordinator.clone(),
        }
    }

    /// The store URL in force.
    pub(crate) fn store_url(&self) -> &str {
        self.backend.store.as_deref().unwrap_or(DEFAULT_STORE)
    }
}

/// The table one variable sets: the first reading of its text that the tree
/// accepts (see [`layers::readings`]), or an error that names the variable.
fn env_value(key: &layers::EnvKey) -> anyhow::Result<Table> {
    let mut first_error = None;
    for value in layers::readings(&key.raw) {
        let table = layers::single(&key.path, value);
        match Settings::read(table.clone()) {
            Ok(_) => return Ok(table),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let error = first_error.map_or_else(String::new, |e| format!("{e:#}"));
    anyhow::bail!(
        "the environment variable {} ({}) is invalid: {error}",
        key.name,
        key.path.join(".")
    )
}

/// The `[backend]` keys the flags set.
fn flag_table(flags: &BackendArgs) -> Table {
    let mut backend = Table::new();
    let mut put = |key: &str, value: Option<&String>| {
        if let Some(v) = value {
            backend.insert(key.to_owned(), toml::Value::String(v.clone()));
        }
    };
    put("llm", flags.llm.as_ref());
    put("model", flags.model.as_ref());
    put("store", flags.store.as_ref());
    put("bus", flags.bus.as_ref());
    put("structured_output", flags.structured_output.as_ref());
    if !flags.fallback_llm.is_empty() {
        let list = flags
            .fallback_llm
            .iter()
            .map(|s| toml::Value::String(s.clone()))
            .collect();
        backend.insert("fallback_llm".to_owned(), toml::Value::Array(list));
    }
    let mut table = Table::new();
    if !backend.is_empty() {
        table.insert("backend".to_owned(), toml::Value::Table(backend));
    }
    table
}

#[cfg(test)]
mod tests;
