//! Turning what an OpenAI-compatible server answered into an answer or an
//! [`LlmError`] that says what to do next.
//!
//! | answer | error | what the caller does |
//! |---|---|---|
//! | 429 | `RateLimited` (with `Retry-After`) | wait, retry |
//! | 408, 5xx | `Server` | retry with backoff |
//! | 400/413 saying the context is too long | `ContextLength` | shorten the prompt, retry |
//! | 401, 403 | `Auth` | stop: fix the key |
//! | other 4xx | `BadRequest` | stop: fix the request |
//! | 200 with an error body, no choice, or no content | `InvalidResponse` | retry |
//!
//! Every error keeps the raw status and body (clipped) for diagnosis.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use troupe_core::llm::{ChatResponse, LlmError};
use troupe_core::task::Usage;

use crate::wire::{ChatCompletionResponse, ErrorBody};

/// The most bytes of a response body kept in an error.
pub(crate) const MAX_BODY_KEPT: usize = 4_096;

/// The longest `Retry-After` honoured; a server asking for more is capped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Phrases with which servers say the prompt does not fit the model's context
/// (OpenAI, vLLM, llama.cpp, LM Studio, and proxies in front of them).
const CONTEXT_MARKERS: &[&str] = &[
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "exceed_context_size",
    "exceeds the available context",
    "context size",
    "maximum model length",
    "prompt is too long",
    "input is too large",
    "too many tokens",
];

/// The error for a non-success status.
pub(crate) fn error_for_status(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> LlmError {
    let code = status.as_u16();
    let body_text = clip_body(body);
    match code {
        429 => LlmError::RateLimited {
            status: code,
            retry_after: retry_after(headers, SystemTime::now()),
            body: body_text,
        },
        401 | 403 => LlmError::Auth {
            status: code,
            body: body_text,
        },
        400 | 413 | 422 if says_context_too_long(body) => LlmError::ContextLength {
            status: code,
            body: body_text,
        },
        408 | 500..=599 => LlmError::Server {
            status: code,
            body: body_text,
        },
        _ => LlmError::BadRequest {
            status: code,
            body: body_text,
        },
    }
}

/// The answer in a 2xx body, or why it is not one.
pub(crate) fn read_success(status: StatusCode, body: &[u8]) -> Result<ChatResponse, LlmError> {
    let code = status.as_u16();
    let invalid = |reason: String| LlmError::InvalidResponse {
        reason,
        body: clip_body(body),
    };
    // Some servers (and proxies) answer 200 with an error object.
    if let Ok(err) = serde_json::from_slice::<ErrorBody>(body) {
        let text = err.error.searchable();
        if CONTEXT_MARKERS.iter().any(|m| text.contains(m)) {
            return Err(LlmError::ContextLength {
                status: code,
                body: clip_body(body),
            });
        }
        return Err(invalid(format!(
            "HTTP {code} with an error in the body: {}",
            text.trim()
        )));
    }
    let parsed: ChatCompletionResponse = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body is not a chat completion: {e}")))?;
    let usage = parsed
        .usage
        .map(|u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        })
        .unwrap_or_default();
    let Some(choice) = parsed.choices.into_iter().next() else {
        return Err(invalid("the response has no choices".into()));
    };
    let finish_reason = choice.finish_reason;
    let message = choice
        .message
        .ok_or_else(|| invalid("the first choice has no message".into()))?;
    if let Some(refusal) = message.refusal.filter(|r| !r.trim().is_empty()) {
        return Err(invalid(format!("the model refused: {refusal}")));
    }
    let content = message.content.map(|c| c.into_text()).unwrap_or_default();
    if content.trim().is_empty() {
        let why = match finish_reason.as_deref() {
            Some("length") => "the reply is empty: the model ran out of tokens before answering",
            _ => "the reply has no content",
        };
        return Err(invalid(why.into()));
    }
    Ok(ChatResponse {
        content,
        usage,
        model: parsed.model.unwrap_or_default(),
        finish_reason,
    })
}

fn says_context_too_long(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_lowercase();
    CONTEXT_MARKERS.iter().any(|m| text.contains(m))
}

/// How long the server asked to wait: `retry-after-ms` (OpenAI), or
/// `Retry-After` in seconds or as an HTTP date; capped at five minutes.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let wait = if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        Duration::try_from_secs_f64(ms / 1000.0).ok()?
    } else {
        let value = header("retry-after")?;
        match value.parse::<f64>() {
            Ok(secs) => Duration::try_from_secs_f64(secs).ok()?,
            Err(_) => {
                let at = httpdate::parse_http_date(value).ok()?;
                at.duration_since(now).unwrap_or(Duration::ZERO)
            }
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A body as text, cut to [`MAX_BODY_KEPT`] bytes on a character boundary.
pub(crate) fn clip_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.len() <= MAX_BODY_KEPT {
        return text.into_owned();
    }
    let mut end = MAX_BODY_KEPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    #[test]
    fn statuses_map_to_classes() {
        let h = HeaderMap::new();
        let class = |code, body: &str| error_for_status(status(code), &h, body.as_bytes()).class();
        assert_eq!(class(429, ""), "rate_limited");
        assert_eq!(class(500, ""), "server");
        assert_eq!(class(503, ""), "server");
        assert_eq!(class(408, ""), "server");
        assert_eq!(class(401, ""), "auth");
        assert_eq!(class(403, ""), "auth");
        assert_eq!(
            class(400, r#"{"error":{"message":"bad role"}}"#),
            "bad_request"
        );
        assert_eq!(class(404, "no such model"), "bad_request");
        assert_eq!(
            class(
                400,
                r#"{"error":{"code":"context_length_exceeded","message":"This model's maximum context length is 8192 tokens"}}"#
            ),
            "context_length"
        );
        assert_eq!(
            class(
                400,
                r#"{"error":{"type":"exceed_context_size_error","message":"the request exceeds the available context size"}}"#
            ),
            "context_length"
        );
    }

    #[test]
    fn retry_after_in_seconds_milliseconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert("retry-after", HeaderValue::from_static("86400"));
        assert_eq!(retry_after(&h, now), Some(MAX_RETRY_AFTER));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(250)));
        h.remove("retry-after-ms");
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn a_200_that_is_not_an_answer_is_an_error() {
        let ok = status(200);
        let err = |body: &str| read_success(ok, body.as_bytes()).unwrap_err();
        assert_eq!(
            err(r#"{"error":{"message":"overloaded"}}"#).class(),
            "invalid_response"
        );
        assert_eq!(err(r#"{"error":"boom"}"#).class(), "invalid_response");
        assert_eq!(
            err(r#"{"error":{"message":"maximum context length exceeded"}}"#).class(),
            "context_length"
        );
        assert_eq!(err(r#"{"choices":[]}"#).class(), "invalid_response");
        assert_eq!(
            err(r#"{"choices":[{"message":{"content":""},"finish_reason":"length"}]}"#).to_string(),
            "the LLM reply is unusable: the reply is empty: the model ran out of tokens before answering"
        );
        assert_eq!(err("<html>502</html>").class(), "invalid_response");
        assert!(
            err(r#"{"choices":[{"message":{"content":null,"refusal":"no"}}]}"#)
                .to_string()
                .contains("refused")
        );
    }

    #[test]
    fn a_good_answer_is_read_with_its_usage() {
        let body = r#"{"id":"x","model":"m1","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
                       "usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
        let r = read_success(status(200), body.as_bytes()).unwrap();
        assert_eq!(r.content, "hi");
        assert_eq!(r.model, "m1");
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            r.usage,
            Usage {
                prompt_tokens: 12,
                completion_tokens: 3
            }
        );
    }

    #[test]
    fn bodies_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(MAX_BODY_KEPT);
        let kept = clip_body(long.as_bytes());
        assert!(kept.len() <= MAX_BODY_KEPT + '…'.len_utf8());
        assert!(kept.ends_with('…'));
    }
}
