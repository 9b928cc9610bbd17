//! [`open`]: the provider a spec names (`openai`, an OpenAI-compatible URL,
//! `local`, `mock`, `mock:FILE`), built and, for `local`, started, with the
//! [`ModelHints`] that say how it should be used.
//!
//! Nothing here reads the environment: [`OpenOptions::from_env`] takes a
//! lookup function, which a program points at its environment.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use troupe_core::llm::{LlmProvider, ModelHints};

use crate::{
    ClientError, LocalError, LocalModelConfig, LocalPaths, LocalServer, OPENAI_BASE_URL,
    OpenAiClient, OpenAiConfig, StructuredOutput,
};

/// The model asked of OpenAI when none is named.
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";

/// How long one call to the local model may take, unless configured: a
/// model on this machine's CPU is slow, slower still when the machine is busy.
pub const LOCAL_CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a worker may take for one subtask on the local model, unless configured.
pub const LOCAL_SUBTASK_TIMEOUT: Duration = Duration::from_secs(1800);
/// Replies asked of the small local model for one valid plan, unless configured.
pub const LOCAL_PLAN_ATTEMPTS: u32 = 5;

/// Which provider a spec names.
///
/// ```
/// use troupe_llm::LlmSpec;
///
/// assert_eq!("local".parse::<LlmSpec>().unwrap(), LlmSpec::Local);
/// assert_eq!(
///     "http://127.0.0.1:11434/v1".parse::<LlmSpec>().unwrap(),
///     LlmSpec::Url("http://127.0.0.1:11434/v1".into())
/// );
/// assert!("gpt".parse::<LlmSpec>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmSpec {
    /// `mock`: the built-in scripted provider, a deterministic valid plan for
    /// any goal (feature `mock`).
    Mock,
    /// `mock:FILE`: a scripted conversation from a JSON file (feature `mock`).
    MockFile(PathBuf),
    /// `local`: the offline model, served by a `llama-server` started here.
    Local,
    /// `openai`: the OpenAI API (or `OPENAI_BASE_URL`), with its API key.
    OpenAi,
    /// An OpenAI-compatible base URL (`http://127.0.0.1:11434/v1`).
    Url(String),
}

impl LlmSpec {
    /// The spec used when none is given: `openai` when an OpenAI key is
    /// known, else the offline model.
    pub fn default_for(options: &OpenOptions) -> Self {
        if options.openai_api_key.is_some() {
            LlmSpec::OpenAi
        } else {
            LlmSpec::Local
        }
    }

    /// Splits `SPEC#MODEL` (how a fallback names its model) into the spec and
    /// the model, if one is given.
    ///
    /// ```
    /// use troupe_llm::LlmSpec;
    ///
    /// let (spec, model) = LlmSpec::with_model("http://h:8000/v1#llama3").unwrap();
    /// assert_eq!(spec, LlmSpec::Url("http://h:8000/v1".into()));
    /// assert_eq!(model.as_deref(), Some("llama3"));
    /// assert_eq!(LlmSpec::with_model("openai").unwrap(), (LlmSpec::OpenAi, None));
    /// ```
    pub fn with_model(text: &str) -> Result<(Self, Option<String>), OpenError> {
        match text.rsplit_once('#') {
            Some((spec, model)) if !model.trim().is_empty() => {
                Ok((spec.parse()?, Some(model.trim().to_owned())))
            }
            _ => Ok((text.parse()?, None)),
        }
    }
}

impl FromStr for LlmSpec {
    type Err = OpenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "mock" => Ok(LlmSpec::Mock),
            "local" => Ok(LlmSpec::Local),
            "openai" => Ok(LlmSpec::OpenAi),
            s if s.starts_with("mock:") && s.len() > "mock:".len() => {
                Ok(LlmSpec::MockFile(PathBuf::from(&s["mock:".len()..])))
            }
            s if s.starts_with("http://") || s.starts_with("https://") => {
                Ok(LlmSpec::Url(s.to_owned()))
            }
            other => Err(OpenError::UnknownSpec(other.to_owned())),
        }
    }
}

impl fmt::Display for LlmSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LlmSpec::Mock => f.write_str("mock"),
            LlmSpec::MockFile(path) => write!(f, "mock:{}", path.display()),
            LlmSpec::Local => f.write_str("local"),
            LlmSpec::OpenAi => f.write_str("openai"),
            LlmSpec::Url(url) => f.write_str(url),
        }
    }
}

/// What [`open`] needs besides the spec. Unset fields keep each provider's defaults.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The model to ask for (required for a URL; `gpt-4o-mini` for OpenAI).
    pub model: Option<String>,
    /// The OpenAI API key (`OPENAI_API_KEY`).
    pub openai_api_key: Option<SecretString>,
    /// Where the OpenAI API is (`OPENAI_BASE_URL`; the public API otherwise).
    pub openai_base_url: Option<String>,
    /// The bearer token for a URL endpoint (`TROUPE_LLM_API_KEY`).
    pub api_key: Option<SecretString>,
    /// How long one request may take at the HTTP client (the runtime has
    /// its own timeout per call; this is the backstop).
    pub timeout: Option<Duration>,
    /// How the server can be held to a JSON shape (JSON schema otherwise).
    pub structured_output: Option<StructuredOutput>,
    /// How the offline model's server runs.
    pub local: LocalModelConfig,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self::from_env(|_| None)
    }
}

impl OpenOptions {
    /// The options a program's settings give, read through `var` (the
    /// environment, in the `troupe` command): `OPENAI_API_KEY`,
    /// `OPENAI_BASE_URL`, `TROUPE_LLM_API_KEY`, and where the offline model is
    /// ([`LocalPaths::resolve`]). Empty values count as unset.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        Self {
            model: None,
            openai_api_key: var("OPENAI_API_KEY").map(SecretString::from),
            openai_base_url: var("OPENAI_BASE_URL"),
            api_key: var("TROUPE_LLM_API_KEY").map(SecretString::from),
            timeout: None,
            structured_output: None,
            local: LocalModelConfig::new(LocalPaths::resolve(var)),
        }
    }
}

/// A provider could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The spec names no provider.
    #[error("unknown LLM {0:?}: use mock, mock:FILE, local, openai, or an http(s) base URL")]
    UnknownSpec(String),
    /// A URL endpoint was named without a model.
    #[error("the LLM {0} needs a model name (--model NAME, or {0}#NAME for a fallback)")]
    NoModel(String),
    /// `openai` without a key.
    #[error(
        "the openai LLM needs OPENAI_API_KEY in the environment (or use the offline model: --llm local)"
    )]
    NoOpenAiKey,
    /// The mock was asked for in a build without it.
    #[error("this build has no mock LLM (troupe-llm's `mock` feature is off)")]
    NoMock,
    /// The mock's script is unusable.
    #[cfg(feature = "mock")]
    #[error(transparent)]
    Script(#[from] crate::mock::ScriptError),
    /// The HTTP client could not be set up.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The offline model could not be started.
    #[error(transparent)]
    Local(#[from] LocalError),
}

/// An opened provider, the hints it comes with, and the server Troupe
/// started for it (stopped by [`stop`](Self::stop), or killed on drop).
#[derive(Debug)]
pub struct OpenedLlm {
    provider: Arc<dyn LlmProvider>,
    hints: ModelHints,
    server: Option<LocalServer>,
}

impl OpenedLlm {
    /// The provider.
    pub fn provider(&self) -> Arc<dyn LlmProvider> {
        self.provider.clone()
    }

    /// How the model should be used where the user set nothing.
    pub fn hints(&self) -> ModelHints {
        self.hints
    }

    /// The local server behind the provider, if Troupe started one.
    pub fn server(&self) -> Option<&LocalServer> {
        self.server.as_ref()
    }

    /// Stops the local server, if there is one, and waits for it to exit.
    pub async fn stop(self) {
        if let Some(server) = self.server {
            server.stop().await;
        }
    }

    fn plain(provider: Arc<dyn LlmProvider>) -> Self {
        Self {
            provider,
            hints: ModelHints::default(),
            server: None,
        }
    }
}

/// Builds the provider `spec` names (and for [`LlmSpec::Local`], starts its
/// server, which takes seconds).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use troupe_llm::{LlmSpec, OpenOptions, open};
///
/// let options = OpenOptions { model: Some("llama3".into()), ..OpenOptions::default() };
/// let llm = open(&"http://127.0.0.1:11434/v1".parse().unwrap(), &options).await.unwrap();
/// assert_eq!(llm.provider().model(), Some("llama3"));
/// assert!(open(&LlmSpec::Url("http://h/v1".into()), &OpenOptions::default()).await.is_err());
/// # });
/// ```
pub async fn open(spec: &LlmSpec, options: &OpenOptions) -> Result<OpenedLlm, OpenError> {
    match spec {
        LlmSpec::Mock => mock(None),
        LlmSpec::MockFile(path) => mock(Some(path)),
        LlmSpec::Local => local(options).await,
        LlmSpec::OpenAi => {
            let key = options
                .openai_api_key
                .clone()
                .ok_or(OpenError::NoOpenAiKey)?;
            let base = options
                .openai_base_url
                .clone()
                .unwrap_or_else(|| OPENAI_BASE_URL.to_owned());
            let model = options
                .model
                .clone()
                .unwrap_or_else(|| DEFAULT_OPENAI_MODEL.to_owned());
            let mut config = OpenAiConfig::new(base, model);
            config.api_key = Some(key);
            config.name = "openai".to_owned();
            remote(config, options)
        }
        LlmSpec::Url(url) => {
            let model = options
                .model
                .clone()
                .ok_or_else(|| OpenError::NoModel(url.clone()))?;
            let mut config = OpenAiConfig::new(url.as_str(), model);
            config.api_key.clone_from(&options.api_key);
            remote(config, options)
        }
    }
}

#[cfg(feature = "mock")]
fn mock(file: Option<&std::path::Path>) -> Result<OpenedLlm, OpenError> {
    let llm = match file {
        Some(path) => crate::mock::MockLlm::from_file(path)?,
        None => crate::mock::MockLlm::builtin(),
    };
    Ok(OpenedLlm::plain(Arc::new(llm)))
}

#[cfg(not(feature = "mock"))]
fn mock(_file: Option<&std::path::Path>) -> Result<OpenedLlm, OpenError> {
    Err(OpenError::NoMock)
}

fn remote(mut config: OpenAiConfig, options: &OpenOptions) -> Result<OpenedLlm, OpenError> {
    if let Some(timeout) = options.timeout {
        config.timeout = timeout;
    }
    config.structured_output = options.structured_output.unwrap_or_default();
    Ok(OpenedLlm::plain(Arc::new(OpenAiClient::new(config)?)))
}

async fn local(options: &OpenOptions) -> Result<OpenedLlm, OpenError> {
    let server = LocalServer::start(&options.local).await?;
    let mut config = server.client_config();
    // The runtime cuts calls at its own timeout; the client's is a backstop
    // that must not cut them sooner.
    config.timeout = options.timeout.unwrap_or_default().max(LOCAL_CALL_TIMEOUT);
    config.structured_output = options.structured_output.unwrap_or_default();
    let client = OpenAiClient::new(config)?;
    Ok(OpenedLlm {
        provider: Arc::new(client),
        hints: ModelHints {
            context_tokens: Some(options.local.ctx_size),
            call_timeout: Some(LOCAL_CALL_TIMEOUT),
            subtask_timeout: Some(LOCAL_SUBTASK_TIMEOUT),
            plan_attempts: Some(LOCAL_PLAN_ATTEMPTS),
        },
        server: Some(server),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for text in [
            "mock",
            "mock:script.json",
            "local",
            "openai",
            "https://h/v1",
        ] {
            let spec: LlmSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        assert!(matches!(
            "mock:".parse::<LlmSpec>(),
            Err(OpenError::UnknownSpec(_))
        ));
        assert!(matches!(
            "ftp://h".parse::<LlmSpec>(),
            Err(OpenError::UnknownSpec(_))
        ));
    }

    #[test]
    fn options_read_keys_through_the_lookup_and_ignore_empty_values() {
        let options = OpenOptions::from_env(|name| match name {
            "OPENAI_API_KEY" => Some("sk-test".into()),
            "TROUPE_LLM_API_KEY" => Some("  ".into()),
            "TROUPE_HOME" => Some("/opt/troupe".into()),
            _ => None,
        });
        assert!(options.openai_api_key.is_some());
        assert!(options.api_key.is_none());
        assert_eq!(LlmSpec::default_for(&options), LlmSpec::OpenAi);
        assert_eq!(
            options.local.paths.server,
            PathBuf::from("/opt/troupe/bin/llama-server")
        );
        assert_eq!(
            LlmSpec::default_for(&OpenOptions::default()),
            LlmSpec::Local
        );
    }

    #[tokio::test]
    async fn openai_needs_its_key_and_a_url_needs_a_model() {
        let none = OpenOptions::from_env(|_| None);
        assert!(matches!(
            open(&LlmSpec::OpenAi, &none).await,
            Err(OpenError::NoOpenAiKey)
        ));
        assert!(matches!(
            open(&LlmSpec::Url("http://h/v1".into()), &none).await,
            Err(OpenError::NoModel(_))
        ));
        let keyed = OpenOptions {
            openai_api_key: Some(SecretString::from("sk-test")),
            timeout: Some(Duration::from_secs(7)),
            ..OpenOptions::from_env(|_| None)
        };
        let opened = open(&LlmSpec::OpenAi, &keyed).await.unwrap();
        assert_eq!(opened.provider().name(), "openai");
        assert_eq!(opened.provider().model(), Some(DEFAULT_OPENAI_MODEL));
        assert_eq!(opened.hints(), ModelHints::default());
    }

    #[tokio::test]
    async fn a_missing_offline_model_says_how_to_install_it() {
        let mut options = OpenOptions::from_env(|_| None);
        options.local.paths = LocalPaths::under(std::path::Path::new("/nonexistent/troupe"));
        let err = open(&LlmSpec::Local, &options).await.unwrap_err();
        assert!(err.to_string().contains("scripts/local-model.sh"), "{err}");
    }
}
