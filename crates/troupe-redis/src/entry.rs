//! Stream entries as they come back from Redis, and what a topic entry says.
//!
//! Entries are read from raw [`Value`]s rather than redis-rs's typed stream
//! replies: those want UTF-8 field names and fail the whole reply on one odd
//! entry, while a consumer must set an unreadable entry aside and go on.
//!
//! A topic entry has the fields:
//! - `envelope`: the [`Envelope`] as JSON;
//! - `group` (optional): the only consumer group the entry is for (a message
//!   given back with `nack`, or a requeued dead letter); other groups skip it;
//! - `deliveries` (optional): deliveries the message had before this entry
//!   was written (a message given back keeps its count).

use redis::Value;
use troupe_core::bus::BusError;
use troupe_core::envelope::Envelope;

/// The field holding the envelope.
pub(crate) const ENVELOPE: &str = "envelope";
/// The field naming the only group an entry is for.
pub(crate) const GROUP: &str = "group";
/// The field counting the deliveries a message had before this entry.
pub(crate) const DELIVERIES: &str = "deliveries";

/// Field names and values of an entry, in order.
pub(crate) type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// One stream entry: its id and its fields, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEntry {
    /// The stream id (`1700000000000-0`).
    pub(crate) id: String,
    /// Field names and values, in order.
    pub(crate) fields: Fields,
}

impl RawEntry {
    /// Reads an entry reply: `[id, [field, value, ...]]` (the field list is
    /// nil for an entry deleted since it was delivered).
    pub(crate) fn from_value(value: Value) -> Result<Self, BusError> {
        let Value::Array(mut parts) = value else {
            return Err(unreadable("a stream entry is not an array"));
        };
        if parts.is_empty() {
            return Err(unreadable("a stream entry is empty"));
        }
        let fields = if parts.len() > 1 {
            parts.swap_remove(1)
        } else {
            Value::Nil
        };
        let id = text(parts.swap_remove(0)).ok_or_else(|| unreadable("a stream entry id"))?;
        let fields = match fields {
            Value::Nil => Vec::new(),
            Value::Array(items) => pairs(items)?,
            Value::Map(items) => items
                .into_iter()
                .map(|(k, v)| Ok((bytes(k)?, bytes(v)?)))
                .collect::<Result<_, BusError>>()?,
            _ => return Err(unreadable("stream entry fields")),
        };
        Ok(Self { id, fields })
    }

    /// The value of field `name`, if there is one.
    pub(crate) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The value of field `name` as text, if there is one and it is UTF-8.
    pub(crate) fn text_field(&self, name: &str) -> Option<&str> {
        self.field(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The fields as text for a person, for an entry that cannot be read otherwise.
    pub(crate) fn describe(&self) -> String {
        let fields: serde_json::Map<String, serde_json::Value> = self
            .fields
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect();
        serde_json::Value::Object(fields).to_string()
    }
}

/// What a topic entry means to one consumer group.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// The entry is for another group only.
    NotOurs,
    /// A message.
    Message {
        /// The message.
        envelope: Box<Envelope>,
        /// Its encoding, as stored (to give it back or bury it unchanged).
        raw: Vec<u8>,
        /// Deliveries before this entry.
        prior: u32,
    },
    /// An entry that holds no readable envelope.
    Malformed {
        /// What it holds, to keep in the dead letters.
        raw: Vec<u8>,
        /// What is wrong.
        reason: String,
        /// Deliveries before this entry.
        prior: u32,
    },
}

impl Incoming {
    /// Reads `entry` for `group`.
    pub(crate) fn read(entry: &RawEntry, group: &str) -> Self {
        if let Some(target) = entry.field(GROUP)
            && target != group.as_bytes()
        {
            return Incoming::NotOurs;
        }
        let prior = entry
            .text_field(DELIVERIES)
            .and_then(|d| d.parse::<u32>().ok())
            .unwrap_or(0);
        let Some(raw) = entry.field(ENVELOPE) else {
            return Incoming::Malformed {
                raw: entry.describe().into_bytes(),
                reason: format!("entry {} has no {ENVELOPE} field", entry.id),
                prior,
            };
        };
        match serde_json::from_slice::<Envelope>(raw) {
            Ok(envelope) => Incoming::Message {
                envelope: Box::new(envelope),
                raw: raw.to_vec(),
                prior,
            },
            Err(e) => Incoming::Malformed {
                raw: raw.to_vec(),
                reason: format!("entry {} is not an envelope: {e}", entry.id),
                prior,
            },
        }
    }
}

/// Reads an `XREADGROUP` reply for one stream: nil when the wait ended
/// empty, else `[[key, [entry, ...]]]` (or a map of key to entries in RESP3).
pub(crate) fn first_read_entry(value: Value) -> Result<Option<RawEntry>, BusError> {
    let streams: Vec<Value> = match value {
        Value::Nil => return Ok(None),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut kv) if kv.len() == 2 => Ok(kv.swap_remove(1)),
                _ => Err(unreadable("an XREADGROUP stream")),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => return Err(unreadable("an XREADGROUP reply")),
    };
    for entries in streams {
        match entries {
            Value::Array(entries) => {
                if let Some(first) = entries.into_iter().next() {
                    return RawEntry::from_value(first).map(Some);
                }
            }
            Value::Nil => {}
            _ => return Err(unreadable("XREADGROUP entries")),
        }
    }
    Ok(None)
}

/// Reads an `XRANGE` reply.
pub(crate) fn range_entries(value: Value) -> Result<Vec<RawEntry>, BusError> {
    match value {
        Value::Array(entries) => entries.into_iter().map(RawEntry::from_value).collect(),
        Value::Nil => Ok(Vec::new()),
        _ => Err(unreadable("an XRANGE reply")),
    }
}

/// A value as bytes, for string-like replies.
pub(crate) fn bytes(value: Value) -> Result<Vec<u8>, BusError> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        Value::Okay => Ok(b"OK".to_vec()),
        _ => Err(unreadable("a string value")),
    }
}

/// A value as UTF-8 text, if it is one.
pub(crate) fn text(value: Value) -> Option<String> {
    bytes(value).ok().and_then(|b| String::from_utf8(b).ok())
}

/// A value as a non-negative integer, if it is one.
pub(crate) fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// `[k1, v1, k2, v2, ...]` as pairs.
fn pairs(items: Vec<Value>) -> Result<Fields, BusError> {
    if !items.len().is_multiple_of(2) {
        return Err(unreadable("stream entry fields (an odd count)"));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        out.push((bytes(k)?, bytes(v)?));
    }
    Ok(out)
}

/// A reply this crate cannot read: the server is not the Redis it expects.
pub(crate) fn unreadable(what: &str) -> BusError {
    BusError::Invalid(format!("unexpected reply from Redis: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> Value {
        let fields = fields
            .iter()
            .flat_map(|(k, v)| [bulk(k), bulk(v)])
            .collect();
        Value::Array(vec![bulk(id), Value::Array(fields)])
    }

    #[test]
    fn reads_an_xreadgroup_reply() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("t:stream:x"),
            Value::Array(vec![entry("1-0", &[("envelope", "{}")])]),
        ])]);
        let got = first_read_entry(reply).unwrap().unwrap();
        assert_eq!(got.id, "1-0");
        assert_eq!(got.field("envelope"), Some(&b"{}"[..]));
        assert_eq!(first_read_entry(Value::Nil).unwrap(), None);
    }

    #[test]
    fn an_entry_for_another_group_is_not_ours() {
        let e = RawEntry::from_value(entry("1-0", &[("envelope", "{}"), ("group", "a")])).unwrap();
        assert!(matches!(Incoming::read(&e, "b"), Incoming::NotOurs));
        assert!(matches!(
            Incoming::read(&e, "a"),
            Incoming::Malformed { .. }
        ));
    }

    #[test]
    fn an_unreadable_entry_is_malformed_not_an_error() {
        let e = RawEntry::from_value(entry("2-0", &[("junk", "\u{1F4A9}"), ("deliveries", "2")]))
            .unwrap();
        match Incoming::read(&e, "g") {
            Incoming::Malformed { reason, prior, raw } => {
                assert!(reason.contains("no envelope field"), "{reason}");
                assert_eq!(prior, 2);
                assert!(String::from_utf8(raw).unwrap().contains("junk"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_deleted_entry_has_no_fields() {
        let e = RawEntry::from_value(Value::Array(vec![bulk("3-0"), Value::Nil])).unwrap();
        assert!(e.fields.is_empty());
    }
}
