//! Dead-letter entries: what the bus writes to `{prefix}stream:{topic}:dlq`
//! and how it reads them back as [`DeadLetter`]s.
//!
//! An entry has the fields `group`, `reason`, `deliveries`, `at` (Unix
//! milliseconds), `source` (the topic entry's id), `malformed` (`1` when the
//! message could not be read) and `envelope` (the message as it was stored).
//!
//! A malformed message has no [`Envelope`] to show, so it is listed with a
//! stand-in: kind `control`, from `redis-bus`, to the topic, and a payload
//! `{"malformed": true, "raw": "..."}` holding (the start of) what was
//! stored. Its id is the stored one when that much could be read, else one
//! derived from the dead-letter entry's id, so it is the same on every
//! listing. Stand-ins are never requeued: there is nothing to deliver.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use troupe_core::bus::DeadLetter;
use troupe_core::envelope::{Envelope, MessageKind};
use troupe_core::{AgentId, MessageId};

use crate::entry::RawEntry;

/// How much of a malformed message a stand-in shows.
const RAW_SHOWN: usize = 64 * 1024;

/// A dead letter read back, with what requeueing it needs.
#[derive(Debug)]
pub(crate) struct StoredLetter {
    /// The dead-letter entry's id.
    pub(crate) entry_id: String,
    /// The letter as the trait shows it.
    pub(crate) letter: DeadLetter,
    /// The message as stored, or `None` if it was malformed.
    pub(crate) raw: Option<Vec<u8>>,
}

impl StoredLetter {
    /// Reads a dead-letter entry of `topic`.
    pub(crate) fn read(topic: &str, entry: &RawEntry) -> Self {
        let group = entry.text_field("group").unwrap_or_default().to_owned();
        let reason = entry.text_field("reason").unwrap_or_default().to_owned();
        let deliveries = entry
            .text_field("deliveries")
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        let at = entry
            .text_field("at")
            .and_then(|ms| ms.parse::<i64>().ok())
            .map_or_else(|| entry_time(&entry.id), troupe_core::time::from_millis);
        let stored = entry.field("envelope").unwrap_or_default();
        let parsed = if entry.text_field("malformed") == Some("1") {
            None
        } else {
            serde_json::from_slice::<Envelope>(stored).ok()
        };
        let (envelope, raw) = match parsed {
            Some(envelope) => (envelope, Some(stored.to_vec())),
            None => (stand_in(topic, &entry.id, stored, at), None),
        };
        Self {
            entry_id: entry.id.clone(),
            letter: DeadLetter {
                topic: topic.to_owned(),
                group,
                envelope,
                deliveries,
                reason,
                at,
            },
            raw,
        }
    }
}

/// The envelope shown for a malformed message (see the module doc).
fn stand_in(topic: &str, entry_id: &str, stored: &[u8], at: DateTime<Utc>) -> Envelope {
    let text = String::from_utf8_lossy(stored);
    let shown: String = if text.len() > RAW_SHOWN {
        let mut end = RAW_SHOWN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    } else {
        text.into_owned()
    };
    let id = serde_json::from_slice::<serde_json::Value>(stored)
        .ok()
        .and_then(|v| serde_json::from_value::<MessageId>(v.get("id")?.clone()).ok())
        .unwrap_or_else(|| id_from_entry(entry_id));
    Envelope {
        id,
        kind: MessageKind::Control,
        from: bus_agent(),
        to: topic.to_owned(),
        task_id: None,
        subtask_id: None,
        attempt: None,
        payload: json!({"malformed": true, "raw": shown}),
        created_at: at,
        trace_context: BTreeMap::new(),
        request_id: None,
    }
}

/// The sender named on stand-ins.
fn bus_agent() -> AgentId {
    // A valid id: the fallback is never taken.
    AgentId::new("redis-bus").unwrap_or_else(|_| AgentId::unique("redis-bus"))
}

/// A message id made from a stream entry id, the same every time.
fn id_from_entry(entry_id: &str) -> MessageId {
    let (ms, seq) = split_id(entry_id);
    let uuid = uuid::Uuid::from_u64_pair(ms, seq);
    serde_json::from_value(json!(uuid.to_string())).unwrap_or_default()
}

/// When a stream entry was added, from its id.
fn entry_time(entry_id: &str) -> DateTime<Utc> {
    let (ms, _) = split_id(entry_id);
    troupe_core::time::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// The two numbers of a stream id (`ms-seq`); zeros where unreadable.
fn split_id(entry_id: &str) -> (u64, u64) {
    let (ms, seq) = entry_id.split_once('-').unwrap_or((entry_id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: &str, fields: &[(&str, &[u8])]) -> RawEntry {
        RawEntry {
            id: id.to_owned(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn reads_a_dead_letter_back() {
        let from = AgentId::new("a-1").unwrap();
        let env = Envelope::new(MessageKind::Progress, from, "x", &json!({"n": 1})).unwrap();
        let stored = serde_json::to_vec(&env).unwrap();
        let entry = raw(
            "1700000000000-0",
            &[
                ("group", b"g"),
                ("reason", b"too many"),
                ("deliveries", b"3"),
                ("at", b"1700000000123"),
                ("source", b"1-0"),
                ("malformed", b"0"),
                ("envelope", &stored),
            ],
        );
        let got = StoredLetter::read("t", &entry);
        assert_eq!(got.letter.envelope, env);
        assert_eq!(got.letter.group, "g");
        assert_eq!(got.letter.deliveries, 3);
        assert_eq!(got.letter.at.timestamp_millis(), 1_700_000_000_123);
        assert_eq!(got.raw, Some(stored));
    }

    #[test]
    fn a_malformed_letter_gets_a_stable_stand_in() {
        let entry = raw(
            "1700000000000-7",
            &[
                ("group", b"g"),
                ("malformed", b"1"),
                ("envelope", b"not json"),
            ],
        );
        let first = StoredLetter::read("t", &entry);
        let again = StoredLetter::read("t", &entry);
        assert_eq!(first.raw, None);
        assert_eq!(first.letter.envelope.id, again.letter.envelope.id);
        assert_eq!(first.letter.envelope.payload["raw"], "not json");
        assert_eq!(first.letter.envelope.to, "t");
    }
}
