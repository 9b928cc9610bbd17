//! Turning the settings' `llm`, `store` and `bus` into the runtime's parts,
//! through the libraries' own constructors (`troupe_llm::open`,
//! `troupe_sql::open_url_with`, `troupe_redis::open_url`).
//!
//! This is the one place of the command that reads the environment for
//! credentials and install locations ([`OpenOptions::from_env`]:
//! `OPENAI_API_KEY`, `OPENAI_BASE_URL`, `TROUPE_LLM_API_KEY`, `TROUPE_HOME`,
//! `TROUPE_LLAMA_SERVER`, `TROUPE_LOCAL_MODEL`).

use std::sync::Arc;

use anyhow::{Context as _, bail};
use troupe::core::bus::Bus;
use troupe::core::llm::LlmProvider;
use troupe::core::redact_url;
use troupe::core::store::Stores;
use troupe::{Troupe, TroupeBuilder, TroupeConfig};
use troupe_llm::{LlmSpec, OpenOptions, OpenedLlm};

use crate::settings::Settings;

/// The LLM a command uses: the provider its spec names, then the fallbacks
/// (`--fallback-llm`), each with the local server Troupe may have started.
pub(crate) struct Llms {
    primary: OpenedLlm,
    fallbacks: Vec<OpenedLlm>,
}

impl Llms {
    /// Builds (and for `local`, starts) every provider.
    pub(crate) async fn start(settings: &Settings) -> anyhow::Result<Self> {
        let options = open_options(settings, settings.backend.model.clone());
        let spec = match &settings.backend.llm {
            Some(text) => text.parse()?,
            None => LlmSpec::default_for(&options),
        };
        let primary = troupe_llm::open(&spec, &options).await?;
        let mut fallbacks = Vec::new();
        for entry in &settings.backend.fallback_llm {
            let opened = async {
                let (spec, model) = LlmSpec::with_model(entry)?;
                troupe_llm::open(&spec, &open_options(settings, model)).await
            }
            .await
            .with_context(|| format!("fallback LLM {entry:?}"))?;
            fallbacks.push(opened);
        }
        Ok(Self { primary, fallbacks })
    }

    /// The runtime's configuration: the settings, with the first provider's
    /// hints where the user set nothing (a slow local model gets longer
    /// timeouts; a known context window bounds the prompt budget).
    pub(crate) fn config(&self, settings: &Settings) -> TroupeConfig {
        settings.runtime().with_hints(&self.primary.hints())
    }

    /// A runtime builder with these providers.
    pub(crate) fn builder(&self) -> TroupeBuilder {
        Troupe::builder()
            .llm(self.primary.provider())
            .fallback_llms(self.fallbacks.iter().map(OpenedLlm::provider))
    }

    /// Starts a runtime on these providers, `bus`, `stores` and `config`,
    /// hosting the built-in workers if `host_workers`.
    pub(crate) async fn runtime(
        &self,
        bus: Arc<dyn Bus>,
        stores: Stores,
        config: TroupeConfig,
        host_workers: bool,
    ) -> anyhow::Result<Troupe> {
        Ok(self
            .builder()
            .bus(bus)
            .host_workers(host_workers)
            .stores(stores)
            .config(config)
            .build()
            .await?)
    }

    /// The providers, primary first, for a runtime built by hand.
    pub(crate) fn providers(&self) -> (Arc<dyn LlmProvider>, Vec<Arc<dyn LlmProvider>>) {
        (
            self.primary.provider(),
            self.fallbacks.iter().map(OpenedLlm::provider).collect(),
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

/// How to open a provider: credentials and install locations from the
/// environment, the rest from the settings.
fn open_options(settings: &Settings, model: Option<String>) -> OpenOptions {
    let mut options = OpenOptions::from_env(|name| std::env::var(name).ok());
    options.model = model;
    options.timeout = settings.runtime().llm.timeout;
    options.structured_output = settings.backend.structured_output();
    settings.local.apply(&mut options.local);
    options
}

/// The bus the settings name.
pub(crate) async fn bus(settings: &Settings) -> anyhow::Result<Arc<dyn Bus>> {
    let url = settings.backend.bus.as_deref().unwrap_or("memory");
    troupe_redis::open_url(url, &settings.bus.options())
        .await
        .with_context(|| format!("cannot connect to the bus {}", redact_url(url)))
}

/// Whether the bus in force lives in this process only (its workers must too).
pub(crate) fn bus_is_local(settings: &Settings) -> bool {
    matches!(settings.backend.bus.as_deref(), None | Some("memory"))
}

/// The stores a store URL names, with the settings' `[postgres]` options.
pub(crate) async fn stores(url: &str, settings: &Settings) -> anyhow::Result<Stores> {
    let options = troupe_sql::OpenOptions {
        postgres: settings.postgres.options(),
        ..Default::default()
    };
    troupe_sql::open_url_with(url, options)
        .await
        .with_context(|| format!("cannot open the store {}", redact_url(url)))
}

/// The stores of an existing database, for commands that only read: a
/// missing SQLite file is an error, not a new empty database.
pub(crate) async fn existing_stores(settings: &Settings) -> anyhow::Result<Stores> {
    let url = settings.store_url();
    if let Some(path) = troupe_sql::sqlite_path(url)
        && !path.exists()
    {
        bail!(
            "there is no database at {} (run a goal first, or pass --store)",
            path.display()
        );
    }
    stores(url, settings).await
}
