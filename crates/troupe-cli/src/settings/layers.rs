//! The layers of the configuration, as TOML tables laid over each other
//! before the one typed tree is read: the file, then the environment
//! (`TROUPE_SECTION__KEY`, every key), then the flags.
//!
//! An environment variable names its key by path: `TROUPE_ORCHESTRATOR__MAX_ATTEMPTS`
//! is `orchestrator.max_attempts`, `TROUPE_LLM__BREAKER__FAILURE_THRESHOLD`
//! is `llm.breaker.failure_threshold`. Its value is read as a TOML value when
//! the key takes one (`5`, `true`, `["a", "b"]`), else as text (`45s`,
//! `postgres://...`); a list may also be given as comma-separated text.
//! Variables without `__` (`TROUPE_LLM`, `TROUPE_HOME`) are not keys.

use toml::{Table, Value};

/// The prefix of every configuration variable.
const PREFIX: &str = "TROUPE_";
/// What separates the parts of a key's path.
const SEPARATOR: &str = "__";

/// One variable that sets a key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EnvKey {
    /// The variable's name, for messages.
    pub(crate) name: String,
    /// The key's path (`["orchestrator", "max_attempts"]`).
    pub(crate) path: Vec<String>,
    /// The value as written.
    pub(crate) raw: String,
}

/// The variables among `vars` that set configuration keys, in name order.
pub(crate) fn env_keys(vars: &[(String, String)]) -> Vec<EnvKey> {
    let mut keys: Vec<EnvKey> = vars
        .iter()
        .filter_map(|(name, raw)| {
            let rest = name.strip_prefix(PREFIX)?;
            if !rest.contains(SEPARATOR) {
                return None;
            }
            let path = rest.split(SEPARATOR).map(str::to_ascii_lowercase).collect();
            Some(EnvKey {
                name: name.clone(),
                path,
                raw: raw.clone(),
            })
        })
        .collect();
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    keys
}

/// The ways a variable's text may be meant, most specific first: a TOML
/// value, the text itself, and a list of its comma-separated parts.
pub(crate) fn readings(raw: &str) -> Vec<Value> {
    let mut out = Vec::new();
    if let Ok(table) = format!("v = {raw}").parse::<Table>()
        && let Some(value) = table.get("v")
        && !value.is_str()
    {
        out.push(value.clone());
    }
    out.push(Value::String(raw.to_owned()));
    if raw.contains(',') {
        let parts = raw
            .split(',')
            .map(|p| Value::String(p.trim().to_owned()))
            .collect();
        out.push(Value::Array(parts));
    }
    out
}

/// A table holding only `value` at `path`.
pub(crate) fn single(path: &[String], value: Value) -> Table {
    let mut table = Table::new();
    set(&mut table, path, value);
    table
}

/// Sets `value` at `path` in `table`, making the tables on the way.
pub(crate) fn set(table: &mut Table, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = table;
    for part in parents {
        let next = at
            .entry(part.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !next.is_table() {
            *next = Value::Table(Table::new());
        }
        let Value::Table(inner) = next else {
            return;
        };
        at = inner;
    }
    at.insert(last.clone(), value);
}

/// Lays `top` over `base`: tables merge key by key, anything else replaces.
pub(crate) fn merge(base: &mut Table, top: Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(below)), Value::Table(above)) => merge(below, above),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_variables_with_a_path_are_keys() {
        let keys = env_keys(&vars(&[
            ("TROUPE_LLM", "mock"),
            ("TROUPE_ORCHESTRATOR__MAX_ATTEMPTS", "5"),
            ("TROUPE_LLM__BREAKER__FAILURE_THRESHOLD", "2"),
            ("HOME", "/root"),
        ]));
        let paths: Vec<_> = keys.iter().map(|k| k.path.join(".")).collect();
        assert_eq!(
            paths,
            vec!["llm.breaker.failure_threshold", "orchestrator.max_attempts"]
        );
    }

    #[test]
    fn values_are_read_as_toml_then_text_then_a_list() {
        assert_eq!(
            readings("5"),
            vec![Value::Integer(5), Value::String("5".into())]
        );
        assert_eq!(readings("45s"), vec![Value::String("45s".into())]);
        assert_eq!(
            readings("a, b"),
            vec![
                Value::String("a, b".into()),
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())])
            ]
        );
        assert_eq!(readings("\"x\"")[0], Value::String("\"x\"".into()));
    }

    #[test]
    fn later_layers_win_key_by_key() {
        let mut base: Table = "[a]\nx = 1\ny = 2\n".parse().unwrap();
        let path = vec!["a".to_owned(), "y".to_owned()];
        merge(&mut base, single(&path, Value::Integer(3)));
        assert_eq!(base.to_string(), "[a]\nx = 1\ny = 3\n");
    }
}
