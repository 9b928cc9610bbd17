//! Conversions between domain values and column values, shared by the dialects.
// Some conversions serve only the SQLite store.
#![cfg_attr(not(feature = "sqlite"), allow(dead_code))]

use chrono::{DateTime, Utc};
use troupe_core::ledger::StepData;
use troupe_core::store::StoreError;
use troupe_core::{SubtaskId, TaskId};

/// Milliseconds since the epoch.
pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A timestamp from milliseconds since the epoch.
pub(crate) fn time(ms: i64) -> DateTime<Utc> {
    troupe_core::time::from_millis(ms)
}

/// A JSON array of strings, as stored in `facts` and `depends_on`.
pub(crate) fn json_list<T: AsRef<str>>(items: &[T]) -> String {
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    serde_json::Value::from(items).to_string()
}

/// Reads a JSON array of strings.
pub(crate) fn parse_list(column: &str, text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(column, text, &e))
}

/// Reads a JSON array of subtask ids.
pub(crate) fn parse_ids(column: &str, text: &str) -> Result<Vec<SubtaskId>, StoreError> {
    parse_list(column, text)?
        .into_iter()
        .map(|s| parse(column, &s))
        .collect()
}

/// Parses a column with `FromStr`, reporting the column on failure.
pub(crate) fn parse<T>(column: &str, text: &str) -> Result<T, StoreError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| corrupt(column, text, &e))
}

/// A task id column.
pub(crate) fn task_id(text: &str) -> Result<TaskId, StoreError> {
    parse("tasks.id", text)
}

/// A non-negative integer column as `u32`.
pub(crate) fn u32_col(column: &str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|e| corrupt(column, &v.to_string(), &e))
}

/// A non-negative integer column as `u64`.
pub(crate) fn u64_col(column: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|e| corrupt(column, &v.to_string(), &e))
}

/// A `u64` that must fit a signed 64-bit column (token counts, steps).
pub(crate) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn corrupt(column: &str, value: &str, e: &dyn std::fmt::Display) -> StoreError {
    let value: String = value.chars().take(60).collect();
    StoreError::Corrupt(format!("{column} = {value:?}: {e}"))
}

/// A step's data as stored: JSON text.
pub(crate) fn data_json(data: &StepData) -> String {
    // A plain enum of strings and numbers: serialising it cannot fail.
    serde_json::to_string(data).unwrap_or_default()
}

/// A step's data as read back. Data this version cannot read (written by a
/// newer one) is left out with a warning: the step itself stays readable.
pub(crate) fn step_data(text: Option<String>) -> Option<StepData> {
    let text = text?;
    match serde_json::from_str(&text) {
        Ok(data) => Some(data),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable step data left out");
            None
        }
    }
}
