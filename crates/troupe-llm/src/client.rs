//! [`OpenAiClient`]: the chat-completions client. It is bare on purpose: one
//! request per call, classified into an answer or an [`LlmError`]; retries,
//! backoff, context shrinking and rate limits are the runtime's layers.

use std::time::Instant;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::ExposeSecret as _;
use troupe_core::llm::{ChatRequest, ChatResponse, LlmError, LlmProvider};

use crate::classify;
use crate::config::OpenAiConfig;
use crate::wire::{self, ChatCompletionRequest};

/// Keys shorter than this are not searched for in bodies (too likely to
/// match ordinary text); real keys are far longer.
const MIN_REDACTED_KEY: usize = 8;

/// A client for one model behind an OpenAI-compatible endpoint.
///
/// Cheap to share: hold it in an `Arc<dyn LlmProvider>`; connections are pooled.
pub struct OpenAiClient {
    http: reqwest::Client,
    config: OpenAiConfig,
    url: String,
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A client that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL does not start with `http://` or `https://`.
    #[error("the LLM base URL {0:?} must start with http:// or https://")]
    BadUrl(String),
    /// The API key cannot be sent in an HTTP header.
    #[error("the API key contains characters that cannot be sent in an HTTP header")]
    BadKey,
    /// The HTTP client could not be set up (TLS roots, ...).
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
}

impl OpenAiClient {
    /// A client for `config`.
    pub fn new(config: OpenAiConfig) -> Result<Self, ClientError> {
        if !(config.base_url.starts_with("http://") || config.base_url.starts_with("https://")) {
            return Err(ClientError::BadUrl(config.base_url));
        }
        let auth = match &config.api_key {
            Some(key) => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {}", key.expose_secret().trim()))
                        .map_err(|_| ClientError::BadKey)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("troupe/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(Self {
            url: config.completions_url(),
            http,
            config,
            auth,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    fn body(&self, request: &ChatRequest) -> Result<Vec<u8>, LlmError> {
        let body = ChatCompletionRequest {
            model: &self.config.model,
            messages: &request.messages,
            temperature: request.temperature.or(self.config.temperature),
            max_tokens: request.max_tokens.or(self.config.max_tokens),
            response_format: wire::response_format(
                &request.response_format,
                self.config.structured_output,
            ),
            stream: false,
        };
        serde_json::to_vec(&body).map_err(|e| LlmError::BadRequest {
            status: 0,
            body: format!("the request cannot be encoded: {e}"),
        })
    }

    /// The response body with the API key blanked out: some servers echo a
    /// refused key in their error, and errors keep the body.
    fn redact(&self, body: &[u8]) -> Vec<u8> {
        let Some(key) = &self.config.api_key else {
            return body.to_vec();
        };
        let key = key.expose_secret().trim().as_bytes();
        if key.len() < MIN_REDACTED_KEY || body.len() < key.len() {
            return body.to_vec();
        }
        let mut out = Vec::with_capacity(body.len());
        let mut rest = body;
        while !rest.is_empty() {
            if rest.starts_with(key) {
                out.extend_from_slice(b"[REDACTED]");
                rest = &rest[key.len()..];
            } else {
                out.push(rest[0]);
                rest = &rest[1..];
            }
        }
        out
    }

    fn transport_error(&self, e: &reqwest::Error) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout(self.config.timeout)
        } else {
            // The chain says why (refused, reset, DNS); the URL is not secret.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            LlmError::Transport(text)
        }
    }
}

#[async_trait]
impl LlmProvider for OpenAiClient {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn model(&self) -> Option<&str> {
        Some(&self.config.model)
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let body = self.body(&request)?;
        let started = Instant::now();
        let mut builder = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let response = builder.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let bytes = self.redact(&bytes);
        let result = if status.is_success() {
            classify::read_success(status, &bytes)
        } else {
            Err(classify::error_for_status(status, &headers, &bytes))
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(reply) => tracing::debug!(
                provider = %self.config.name,
                gen_ai.request.model = %self.config.model,
                gen_ai.response.model = %reply.model,
                gen_ai.usage.input_tokens = reply.usage.prompt_tokens,
                gen_ai.usage.output_tokens = reply.usage.completion_tokens,
                kind = request.meta.kind.as_str(),
                elapsed_ms,
                "LLM call answered"
            ),
            Err(e) => tracing::debug!(
                provider = %self.config.name,
                gen_ai.request.model = %self.config.model,
                status = status.as_u16(),
                error.class = e.class(),
                kind = request.meta.kind.as_str(),
                elapsed_ms,
                "LLM call failed"
            ),
        }
        result
    }
}
