//! Finding the JSON in an LLM reply.
//!
//! Models wrap JSON in code fences, put prose around it, leave trailing commas
//! or comments in it. [`extract_json`] tries, in order: the whole reply, each
//! fenced block, then every balanced `{...}` or `[...]` in the text (the largest
//! that parses wins); each candidate is tried as written and then with small
//! repairs ([`repair`]). What it cannot read, it says why, in words an LLM can act on.

use serde_json::Value;

/// Why no JSON could be read from a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// The reply is empty or only whitespace.
    #[error("the reply is empty")]
    Empty,
    /// No `{` or `[` in the reply at all.
    #[error("the reply contains no JSON object")]
    NoJson,
    /// A `{` or `[` is never closed: the reply was probably cut off.
    #[error("the JSON is cut off: it ends before every '{{' and '[' is closed")]
    Truncated,
    /// Something looked like JSON but did not parse.
    #[error("the JSON is invalid: {0}")]
    Invalid(String),
}

/// Finds and parses the JSON object or array in `text`.
///
/// ```
/// use troupe_core::plan::extract::extract_json;
///
/// let reply = "Sure! Here it is:\n```json\n{\"subtasks\": [1, 2,],}\n```\nAnything else?";
/// assert_eq!(extract_json(reply).unwrap(), serde_json::json!({"subtasks": [1, 2]}));
/// ```
pub fn extract_json(text: &str) -> Result<Value, ExtractError> {
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return Err(ExtractError::Empty);
    }
    if let Some(v) = parse_structured(text) {
        return Ok(v);
    }
    for block in fenced_blocks(text) {
        if let Some(v) = parse_structured(block).or_else(|| parse_structured(&repair(block))) {
            return Ok(v);
        }
    }
    let mut best: Option<(usize, Value)> = None;
    let mut first_error = None;
    let mut unclosed = false;
    let mut pos = 0;
    while let Some(offset) = text[pos..].find(['{', '[']) {
        let start = pos + offset;
        match balanced_end(text, start) {
            Some(end) => {
                let slice = &text[start..end];
                match serde_json::from_str::<Value>(slice) {
                    Ok(v) => keep_largest(&mut best, slice.len(), v),
                    Err(e) => match parse_structured(&repair(slice)) {
                        Some(v) => keep_largest(&mut best, slice.len(), v),
                        None => {
                            if first_error.is_none() && slice.len() > 2 {
                                first_error = Some(e.to_string());
                            }
                        }
                    },
                }
                // A parsed candidate is taken whole; otherwise look inside it too.
                pos = if best.as_ref().is_some_and(|(len, _)| *len == slice.len()) {
                    end
                } else {
                    start + 1
                };
            }
            None => {
                unclosed = true;
                pos = start + 1;
            }
        }
    }
    match (best, first_error) {
        (Some((_, v)), _) => Ok(v),
        (None, _) if unclosed && !text.trim_end().ends_with(['}', ']']) => {
            Err(ExtractError::Truncated)
        }
        (None, Some(e)) => Err(ExtractError::Invalid(e)),
        (None, None) if unclosed => Err(ExtractError::Truncated),
        (None, None) => Err(ExtractError::NoJson),
    }
}

fn keep_largest(best: &mut Option<(usize, Value)>, len: usize, v: Value) {
    if !(v.is_object() || v.is_array()) {
        return;
    }
    if best.as_ref().is_none_or(|(l, _)| len > *l) {
        *best = Some((len, v));
    }
}

fn parse_structured(text: &str) -> Option<Value> {
    serde_json::from_str::<Value>(text.trim())
        .ok()
        .filter(|v| v.is_object() || v.is_array())
}

/// The contents of each ```` ``` ```` fenced block, without the language tag.
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
        let tag = &after[..body_start];
        // A fence's tag is a word such as `json`; anything else means the body starts right away.
        let body = if tag.trim().chars().all(|c| c.is_ascii_alphanumeric()) {
            &after[body_start..]
        } else {
            after
        };
        match body.find("```") {
            Some(close) => {
                blocks.push(&body[..close]);
                rest = &body[close + 3..];
            }
            None => {
                blocks.push(body);
                break;
            }
        }
    }
    blocks
}

/// The byte index just past the bracket that closes the one at `start`, if any.
fn balanced_end(text: &str, start: usize) -> Option<usize> {
    let mut stack: Vec<char> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text[start..].char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => stack.push('}'),
            '[' => stack.push(']'),
            '}' | ']' => {
                if stack.pop() != Some(c) {
                    return None;
                }
                if stack.is_empty() {
                    return Some(start + i + c.len_utf8());
                }
            }
            _ => {}
        }
    }
    None
}

/// Small repairs outside strings: `//` and `/* */` comments removed, trailing
/// commas before `}` or `]` removed, curly quotes used as delimiters made straight.
pub fn repair(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    // A string opened with a curly quote also closes with one.
    let mut curly = false;
    let mut escaped = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                (false, '\u{201c}' | '\u{201d}') if curly => {
                    in_string = false;
                    out.push('"');
                    i += 1;
                    continue;
                }
                _ => {}
            }
            out.push(c);
            i += 1;
            continue;
        }
        match c {
            '"' | '\u{201c}' | '\u{201d}' => {
                out.push('"');
                curly = c != '"';
                in_string = true;
            }
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
                continue;
            }
            ',' => {
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                if !matches!(next, Some('}' | ']')) {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn plain_json_is_read_as_is() {
        assert_eq!(extract_json(r#"{"a": 1}"#).unwrap(), json!({"a": 1}));
        assert_eq!(extract_json(" [1, 2] ").unwrap(), json!([1, 2]));
    }

    #[test]
    fn fences_and_prose_are_skipped() {
        let text = "Here you go:\n```json\n{\"a\": [1, {\"b\": \"}\"}]}\n```\nDone.";
        assert_eq!(extract_json(text).unwrap(), json!({"a": [1, {"b": "}"}]}));
        let text = "I think [this] is it: {\"a\": \"x\"} and that's all";
        assert_eq!(extract_json(text).unwrap(), json!({"a": "x"}));
        let text = "```{\"a\": 2}```";
        assert_eq!(extract_json(text).unwrap(), json!({"a": 2}));
    }

    #[test]
    fn the_largest_candidate_wins() {
        let text = "first {\"a\": 1} then {\"subtasks\": [{\"id\": \"s1\"}]}";
        assert_eq!(
            extract_json(text).unwrap(),
            json!({"subtasks": [{"id": "s1"}]})
        );
    }

    #[test]
    fn small_slips_are_repaired() {
        let text = "{\n  // the plan\n  \"a\": [1, 2,], /* note */ \"b\": \u{201c}x\u{201d},\n}";
        assert_eq!(extract_json(text).unwrap(), json!({"a": [1, 2], "b": "x"}));
        assert_eq!(repair(r#"{"u": "http://x/,]"}"#), r#"{"u": "http://x/,]"}"#);
    }

    #[test]
    fn failures_say_why() {
        assert_eq!(extract_json("  "), Err(ExtractError::Empty));
        assert_eq!(extract_json("no json here"), Err(ExtractError::NoJson));
        assert_eq!(
            extract_json("{\"subtasks\": [{\"id\": \"s1\""),
            Err(ExtractError::Truncated)
        );
        assert!(matches!(
            extract_json("{\"a\": nope}"),
            Err(ExtractError::Invalid(_))
        ));
    }

    #[test]
    fn scalars_are_not_taken_for_a_plan() {
        assert_eq!(extract_json("42"), Err(ExtractError::NoJson));
        assert_eq!(extract_json("\"text\""), Err(ExtractError::NoJson));
    }
}
