//! The configuration of one command: file < environment < flags.
//!
//! The file is TOML: a `[backend]` table (`llm`, `model`, `store`, `bus`,
//! `structured_output`), a `[local]` table for the offline model's server,
//! a `[bus]` table (delivery settings), a `[postgres]` table (the
//! PostgreSQL store's connections), the runtime's tables
//! (`[orchestrator]`, `[workers]`, `[llm]`, `[retry]`, `[coordinator]`), and the
//! telemetry tables (`[log]`, `[traces]`, read by [`crate::telemetry`]);
//! unknown keys rejected. Environment variables (`TROUPE_LLM`, `TROUPE_STORE`, ...) and
//! flags come in through clap and override the file.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use troupe::TroupeConfig;
use troupe::config::{
    CoordinatorConfig, LlmCallConfig, OrchestratorConfig, RetryConfig, WorkersConfig, duration,
};
use troupe_llm::{LocalModelConfig, StructuredOutput};
use troupe_sql::PostgresOptions;

use crate::cli::BackendArgs;

/// The default store: a SQLite file in the working directory.
pub(crate) const DEFAULT_STORE: &str = "sqlite://troupe.db";

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    backend: FileBackend,
    local: LocalSettings,
    orchestrator: OrchestratorConfig,
    workers: WorkersConfig,
    llm: LlmCallConfig,
    retry: RetryConfig,
    coordinator: CoordinatorConfig,
    bus: BusSettings,
    postgres: PostgresSettings,
    /// Read and checked by [`crate::telemetry`].
    log: serde::de::IgnoredAny,
    /// Read and checked by [`crate::telemetry`].
    traces: serde::de::IgnoredAny,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileBackend {
    llm: Option<String>,
    /// Fallback providers, `SPEC` or `SPEC#MODEL`, in order.
    fallback_llm: Vec<String>,
    model: Option<String>,
    store: Option<String>,
    bus: Option<String>,
    structured_output: Option<String>,
}

/// How the bus delivers (`[bus]`); unset keys keep the bus's defaults (60 s
/// and 5 deliveries). The visibility timeout is how long a message taken by a
/// worker that died waits before another worker gets it: the recovery time
/// after a crash. Busy workers extend it every `workers.heartbeat`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BusSettings {
    /// How long a delivery stays invisible to other consumers before redelivery.
    #[serde(default, with = "optional_duration")]
    pub(crate) visibility_timeout: Option<Duration>,
    /// Deliveries after which a message goes to the dead letters.
    pub(crate) max_deliveries: Option<u32>,
    /// For `rediss://`: a PEM file with the certificate of the authority that
    /// signed the server's certificate (a private CA), trusted instead of the
    /// system's roots.
    pub(crate) tls_ca_file: Option<std::path::PathBuf>,
}

impl BusSettings {
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
    #[serde(default, with = "optional_duration")]
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

mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        super::duration::parse(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// Everything a command needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) backend: BackendArgs,
    pub(crate) local: LocalSettings,
    pub(crate) runtime: TroupeConfig,
    pub(crate) bus: BusSettings,
    pub(crate) postgres: PostgresSettings,
}

impl Settings {
    /// Reads the file (if any) and lays the flags over it.
    pub(crate) fn load(file: Option<&Path>, flags: &BackendArgs) -> anyhow::Result<Self> {
        let parsed = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the configuration file {}", path.display())
                })?;
                toml::from_str::<FileConfig>(&text).with_context(|| {
                    format!("the configuration file {} is invalid", path.display())
                })?
            }
            None => FileConfig::default(),
        };
        let runtime = TroupeConfig {
            orchestrator: parsed.orchestrator,
            workers: parsed.workers,
            llm: parsed.llm,
            retry: parsed.retry,
            coordinator: parsed.coordinator,
        };
        runtime.validate()?;
        parsed.local.validate()?;
        parsed.bus.validate(&runtime.workers)?;
        parsed.postgres.validate()?;
        let backend = BackendArgs {
            llm: flags.llm.clone().or(parsed.backend.llm),
            fallback_llm: if flags.fallback_llm.is_empty() {
                parsed.backend.fallback_llm
            } else {
                flags.fallback_llm.clone()
            },
            model: flags.model.clone().or(parsed.backend.model),
            store: flags.store.clone().or(parsed.backend.store),
            bus: flags.bus.clone().or(parsed.backend.bus),
            structured_output: flags
                .structured_output
                .clone()
                .or(parsed.backend.structured_output),
        };
        if let Some(mode) = &backend.structured_output {
            mode.parse::<StructuredOutput>()
                .map_err(anyhow::Error::msg)?;
        }
        Ok(Self {
            backend,
            local: parsed.local,
            runtime,
            bus: parsed.bus,
            postgres: parsed.postgres,
        })
    }

    /// The store URL in force.
    pub(crate) fn store_url(&self) -> &str {
        self.backend.store.as_deref().unwrap_or(DEFAULT_STORE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn flags_override_the_file() {
        let f = write(
            "[backend]\nllm = \"mock\"\nstore = \"memory\"\n[orchestrator]\nmax_attempts = 5\nsubtask_timeout = \"45s\"\n",
        );
        let flags = BackendArgs {
            store: Some("sqlite://x.db".into()),
            ..BackendArgs::default()
        };
        let s = Settings::load(Some(f.path()), &flags).unwrap();
        assert_eq!(s.backend.llm.as_deref(), Some("mock"));
        assert_eq!(s.store_url(), "sqlite://x.db");
        assert_eq!(s.runtime.orchestrator.max_attempts, 5);
        assert_eq!(
            s.runtime.orchestrator.subtask_timeout,
            std::time::Duration::from_secs(45)
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let f = write("[orchestrator]\nmax_atempts = 5\n");
        let err = format!(
            "{:#}",
            Settings::load(Some(f.path()), &BackendArgs::default()).unwrap_err()
        );
        assert!(err.contains("max_atempts"), "{err}");
        let f = write("[workers]\nper_role = 0\n");
        let err = format!(
            "{:#}",
            Settings::load(Some(f.path()), &BackendArgs::default()).unwrap_err()
        );
        assert!(err.contains("workers.per_role"), "{err}");
        let err = Settings::load(
            Some(Path::new("/nonexistent/troupe.toml")),
            &BackendArgs::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn the_postgres_table_sets_the_store_options_within_bounds() {
        let defaults = PostgresOptions::default();
        let none = Settings::load(None, &BackendArgs::default()).unwrap();
        assert_eq!(none.postgres.options().writers, defaults.writers);
        assert_eq!(
            none.postgres.options().max_connections,
            defaults.max_connections
        );
        let f = write(
            "[postgres]
writers = 1
max_connections = 20
",
        );
        let s = Settings::load(Some(f.path()), &BackendArgs::default()).unwrap();
        let options = s.postgres.options();
        assert_eq!((options.writers, options.max_connections), (1, 20));
        assert_eq!(options.max_batch, defaults.max_batch);
        for (text, key) in [
            (
                "[postgres]
writers = 0
",
                "postgres.writers is 0",
            ),
            (
                "[postgres]
writers = 65
",
                "postgres.writers is 65",
            ),
            (
                "[postgres]
max_connections = 0
",
                "postgres.max_connections is 0",
            ),
            (
                "[postgres]
pool = 3
",
                "pool",
            ),
        ] {
            let f = write(text);
            let err = format!(
                "{:#}",
                Settings::load(Some(f.path()), &BackendArgs::default()).unwrap_err()
            );
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
