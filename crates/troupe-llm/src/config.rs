//! How to reach an OpenAI-compatible server.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The public OpenAI API.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// How a server can be held to a JSON shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StructuredOutput {
    /// `response_format: {"type": "json_schema", ...}`: OpenAI, vLLM, llama.cpp,
    /// LM Studio, recent Ollama.
    #[default]
    JsonSchema,
    /// `response_format: {"type": "json_object"}`: any JSON object; the
    /// schema is only in the prompt.
    JsonObject,
    /// Nothing in the request: the schema is only in the prompt.
    Prompt,
}

impl StructuredOutput {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            StructuredOutput::JsonSchema => "json_schema",
            StructuredOutput::JsonObject => "json_object",
            StructuredOutput::Prompt => "prompt",
        }
    }
}

impl fmt::Display for StructuredOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StructuredOutput {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "json_schema" => Ok(StructuredOutput::JsonSchema),
            "json_object" => Ok(StructuredOutput::JsonObject),
            "prompt" => Ok(StructuredOutput::Prompt),
            other => Err(format!(
                "unknown structured output mode {other:?}: use json_schema, json_object or prompt"
            )),
        }
    }
}

/// Everything [`OpenAiClient`](crate::OpenAiClient) needs. The API key is a
/// [`SecretString`]: it is shown as `[REDACTED]` by `Debug` and only read to
/// build the `Authorization` header, which is marked sensitive.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The base URL, up to and including `/v1` (`http://127.0.0.1:11434/v1`).
    pub base_url: String,
    /// The model to ask for.
    pub model: String,
    /// The bearer token, if the server wants one.
    pub api_key: Option<SecretString>,
    /// How long one request may take, from sending to the last byte.
    pub timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How the server can be held to a JSON shape.
    pub structured_output: StructuredOutput,
    /// Sampling temperature for requests that do not set one.
    pub temperature: Option<f32>,
    /// Token limit for replies to requests that do not set one.
    pub max_tokens: Option<u32>,
    /// A short name for logs (`openai`, `local`, the host).
    pub name: String,
}

impl OpenAiConfig {
    /// A configuration for `model` at `base_url`, with no key and the defaults:
    /// 120 s per request, 10 s to connect, JSON-schema output.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        let name = host_of(&base_url).unwrap_or("openai-compatible").to_owned();
        Self {
            base_url,
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            structured_output: StructuredOutput::default(),
            temperature: None,
            max_tokens: None,
            name,
        }
    }

    /// The same configuration with an API key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(SecretString::from(key.into()));
        self
    }

    /// The endpoint requests go to.
    pub fn completions_url(&self) -> String {
        format!("{}/chat/completions", self.base_url)
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("structured_output", &self.structured_output)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("name", &self.name)
            .finish()
    }
}

fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?;
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_shows_in_debug() {
        let c = OpenAiConfig::new("https://api.example.com/v1/", "m").with_api_key("sk-secret-123");
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-secret-123"), "{shown}");
        assert!(shown.contains("[REDACTED]"));
        assert_eq!(c.base_url, "https://api.example.com/v1");
        assert_eq!(
            c.completions_url(),
            "https://api.example.com/v1/chat/completions"
        );
        assert_eq!(c.name, "api.example.com");
    }

    #[test]
    fn modes_parse() {
        assert_eq!("json_object".parse(), Ok(StructuredOutput::JsonObject));
        assert!("xml".parse::<StructuredOutput>().is_err());
        assert_eq!(
            host_of("http://user@127.0.0.1:8080/v1"),
            Some("127.0.0.1:8080")
        );
    }
}
