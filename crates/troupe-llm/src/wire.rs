//! The chat-completions wire format (`POST {base}/chat/completions`), as the
//! OpenAI API defines it and as Ollama, vLLM, LM Studio and llama.cpp's server
//! accept it. Only the fields Troupe sends or reads are modelled; unknown fields
//! in responses are ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use troupe_core::llm::{ChatMessage, ResponseFormat};

use crate::config::StructuredOutput;

/// The request body.
#[derive(Debug, Serialize)]
pub(crate) struct ChatCompletionRequest<'a> {
    pub(crate) model: &'a str,
    pub(crate) messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response_format: Option<WireResponseFormat<'a>>,
    pub(crate) stream: bool,
}

/// `response_format` as the server understands it.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum WireResponseFormat<'a> {
    JsonObject,
    JsonSchema { json_schema: WireJsonSchema<'a> },
}

#[derive(Debug, Serialize)]
pub(crate) struct WireJsonSchema<'a> {
    pub(crate) name: &'a str,
    pub(crate) schema: &'a Value,
    /// Strict mode restricts the schemas OpenAI accepts (every property
    /// required, no `minItems`...); Troupe validates replies itself, so it
    /// asks for the schema without it.
    pub(crate) strict: bool,
}

/// What to put in `response_format` for `wanted`, given what the server can do.
pub(crate) fn response_format<'a>(
    wanted: &'a ResponseFormat,
    capability: StructuredOutput,
) -> Option<WireResponseFormat<'a>> {
    match (wanted, capability) {
        (ResponseFormat::Text, _) | (_, StructuredOutput::Prompt) => None,
        (ResponseFormat::JsonObject, _)
        | (ResponseFormat::JsonSchema { .. }, StructuredOutput::JsonObject) => {
            Some(WireResponseFormat::JsonObject)
        }
        (ResponseFormat::JsonSchema { name, schema }, StructuredOutput::JsonSchema) => {
            Some(WireResponseFormat::JsonSchema {
                json_schema: WireJsonSchema {
                    name,
                    schema,
                    strict: false,
                },
            })
        }
    }
}

/// The response body of a successful call.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatCompletionResponse {
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) choices: Vec<Choice>,
    #[serde(default)]
    pub(crate) usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Choice {
    #[serde(default)]
    pub(crate) message: Option<AssistantMessage>,
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AssistantMessage {
    #[serde(default)]
    pub(crate) content: Option<Content>,
    /// Set by OpenAI when the model declines to answer in the requested format.
    #[serde(default)]
    pub(crate) refusal: Option<String>,
}

/// Message content: a string, or (some servers) a list of typed parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub(crate) struct ContentPart {
    #[serde(default)]
    pub(crate) text: Option<String>,
}

impl Content {
    pub(crate) fn into_text(self) -> String {
        match self {
            Content::Text(t) => t,
            Content::Parts(parts) => parts.into_iter().filter_map(|p| p.text).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    pub(crate) prompt_tokens: u64,
    #[serde(default)]
    pub(crate) completion_tokens: u64,
}

/// An error body: `{"error": {"message": ..., "type": ..., "code": ...}}`, or
/// (some servers) `{"error": "text"}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum ErrorDetail {
    Object {
        #[serde(default)]
        message: Option<String>,
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        code: Option<Value>,
    },
    Text(String),
}

impl ErrorDetail {
    /// All the text the error carries, lower-cased, for matching.
    pub(crate) fn searchable(&self) -> String {
        match self {
            ErrorDetail::Object {
                message,
                kind,
                code,
            } => {
                let code = code.as_ref().map(Value::to_string).unwrap_or_default();
                format!(
                    "{} {} {code}",
                    message.as_deref().unwrap_or_default(),
                    kind.as_deref().unwrap_or_default()
                )
                .to_lowercase()
            }
            ErrorDetail::Text(t) => t.to_lowercase(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn response_format_follows_the_capability() {
        let schema = json!({"type": "object"});
        let wanted = ResponseFormat::JsonSchema {
            name: "plan".into(),
            schema: schema.clone(),
        };
        let as_json = |f: Option<WireResponseFormat<'_>>| serde_json::to_value(f).unwrap();
        assert_eq!(
            as_json(response_format(&wanted, StructuredOutput::JsonSchema)),
            json!({"type": "json_schema", "json_schema": {"name": "plan", "schema": schema, "strict": false}})
        );
        assert_eq!(
            as_json(response_format(&wanted, StructuredOutput::JsonObject)),
            json!({"type": "json_object"})
        );
        assert!(response_format(&wanted, StructuredOutput::Prompt).is_none());
        assert!(response_format(&ResponseFormat::Text, StructuredOutput::JsonSchema).is_none());
    }

    #[test]
    fn content_parts_are_joined() {
        let c: Content =
            serde_json::from_value(json!([{"type": "text", "text": "a"}, {"text": "b"}])).unwrap();
        assert_eq!(c.into_text(), "ab");
    }
}
