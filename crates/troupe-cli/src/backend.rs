//! Turning `--llm`, `--store` and `--bus` into the runtime's parts.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use troupe::core::bus::{Bus, MemoryBus};
use troupe::core::llm::LlmProvider;
use troupe::core::store::Stores;
use troupe_testkit::mock::MockLlm;

/// The LLM a `--llm` spec names.
pub(crate) fn llm(spec: Option<&str>) -> anyhow::Result<Arc<dyn LlmProvider>> {
    let spec = match spec {
        Some(s) => s.trim().to_owned(),
        None => {
            let default = if std::env::var_os("OPENAI_API_KEY").is_some() {
                "openai"
            } else {
                "local"
            };
            bail!(
                "no --llm given, and the default ({default}) needs the OpenAI-compatible provider, which is not \
                 in this build yet; run with --llm mock (or --llm mock:FILE for a scripted conversation)"
            )
        }
    };
    match spec.as_str() {
        "mock" => Ok(Arc::new(MockLlm::builtin())),
        s if s.starts_with("mock:") => {
            let path = Path::new(&s["mock:".len()..]);
            Ok(Arc::new(MockLlm::from_file(path)?))
        }
        "local" | "openai" => bail!(
            "--llm {spec} needs the OpenAI-compatible provider, which is not in this build yet; use --llm mock"
        ),
        s if s.starts_with("http://") || s.starts_with("https://") => bail!(
            "--llm {s}: OpenAI-compatible endpoints need the provider, which is not in this build yet; use --llm mock"
        ),
        other => bail!(
            "unknown --llm {other:?}: use mock, mock:FILE, local, openai, or an http(s) base URL"
        ),
    }
}

/// The bus a `--bus` URL names.
pub(crate) fn bus(url: Option<&str>) -> anyhow::Result<Arc<dyn Bus>> {
    match url.unwrap_or("memory") {
        "memory" => Ok(Arc::new(MemoryBus::default())),
        u if u.starts_with("redis://") || u.starts_with("rediss://") => {
            bail!("the Redis bus is not in this build yet; use --bus memory")
        }
        other => bail!("unknown --bus {other:?}: use memory"),
    }
}

/// The stores a `--store` URL names.
pub(crate) async fn stores(url: &str) -> anyhow::Result<Stores> {
    troupe_sql::open_url(url)
        .await
        .with_context(|| format!("cannot open the store {url}"))
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
    stores(url).await
}
