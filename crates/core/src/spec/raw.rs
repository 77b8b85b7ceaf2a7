//! The spec as written: serde types that mirror `network.toml` key for key, with byte spans.
//!
//! Nothing here is checked beyond TOML types and key names (`deny_unknown_fields`, so a typo is an
//! error rather than a silently ignored key). Required keys are `Option`s and enums are strings on
//! purpose: validation reports a missing key or a misspelt strategy itself, with the field path and
//! the list of accepted values, and reports all such problems at once instead of serde's first one.
//! The builder produces these same types (without spans), so both paths share one validation.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Deserializer};

/// A value and, when it came from TOML text, the byte span it was written at.
#[derive(Debug, Clone)]
pub(crate) struct Located<T> {
    pub value: T,
    pub span: Option<Range<usize>>,
}

impl<T> Located<T> {
    /// A value that was not read from text (the builder's).
    pub fn unplaced(value: T) -> Self {
        Located { value, span: None }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = toml::Spanned::<T>::deserialize(d)?;
        Ok(Located { span: Some(spanned.span()), value: spanned.into_inner() })
    }
}

// Env keys are map keys; they compare by value only, like `toml::Spanned`.
impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Located<T> {}

impl<T: Ord> PartialOrd for Located<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: Ord> Ord for Located<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value.cmp(&other.value)
    }
}

/// A list of located values, itself located.
pub(crate) type LocatedList<T> = Located<Vec<Located<T>>>;

/// The whole document.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSpec {
    pub name: Option<Located<String>>,
    pub chain: Option<Located<RawChain>>,
    pub access: Option<Located<RawAccess>>,
    #[serde(default)]
    pub clusters: Vec<Located<RawCluster>>,
    #[serde(default)]
    pub services: Vec<Located<RawService>>,
    pub state: Option<Located<RawState>>,
}

/// `[state]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    pub backend: Option<Located<String>>,
    pub bucket: Option<Located<String>>,
    pub key: Option<Located<String>>,
    pub region: Option<Located<String>>,
    pub profile: Option<Located<String>>,
    pub encryption: Option<Located<String>>,
    pub kms_key_id: Option<Located<String>>,
    pub client_encryption: Option<bool>,
}

/// `[chain]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChain {
    pub genesis: Option<Located<String>>,
}

/// `[access]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccess {
    pub admin_cidrs: Option<LocatedList<String>>,
    pub ssh: Option<bool>,
    pub force_open_admin: Option<bool>,
}

/// One `[[clusters]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub name: Option<Located<String>>,
    pub provider: Option<Located<String>>,
    pub region: Option<Located<String>>,
    pub size: Option<Located<String>>,
    pub image: Option<Located<String>>,
    pub nodes: Option<Located<i64>>,
    pub tags: Option<LocatedList<String>>,
    pub profile: Option<Located<String>>,
    pub update: Option<Located<RawUpdate>>,
}

/// One `[[services]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: Option<Located<String>>,
    pub role: Option<Located<String>>,
    pub image: Option<Located<String>>,
    pub containers: Option<Located<i64>>,
    pub strategy: Option<Located<String>>,
    pub deploy_tags: Option<LocatedList<String>>,
    pub env: Option<Located<BTreeMap<Located<String>, Located<RawEnvValue>>>>,
    pub ports: Option<LocatedList<i64>>,
    pub restart: Option<Located<String>>,
    pub health: Option<Located<RawHealth>>,
    pub update: Option<Located<RawUpdate>>,
}

/// One value of a service's `env`: a string, or a table saying where the value comes from.
#[derive(Debug, Clone)]
pub(crate) enum RawEnvValue {
    /// `KEY = "value"`.
    Text(String),
    /// `KEY = { from_env = "...", secret = true }` and the like (see `super::secrets`).
    Source(RawEnvSource),
}

/// The table form of an env value: exactly one of `from_env`, `from_file`, `value`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnvSource {
    /// Read from this variable of peerfleet's own environment.
    pub from_env: Option<Located<String>>,
    /// Read from this file (relative to the spec's directory).
    pub from_file: Option<Located<String>>,
    /// Given here (how the builder passes secrets, and how a literal is marked sensitive).
    pub value: Option<Located<String>>,
    /// Whether the value is sealed wherever it is recorded; true unless `secret = false`.
    pub secret: Option<Located<bool>>,
    /// What `from_env` or `from_file` held, once read (never part of the TOML).
    #[serde(skip)]
    pub resolved: Option<crate::provider::Secret>,
}

impl<'de> Deserialize<'de> for RawEnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RawEnvValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, or a table with one of from_env, from_file, value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawEnvValue, E> {
                Ok(RawEnvValue::Text(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawEnvValue, A::Error> {
                let d = serde::de::value::MapAccessDeserializer::new(map);
                RawEnvSource::deserialize(d).map(RawEnvValue::Source)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// `[services.health]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub command: Option<LocatedList<String>>,
    pub interval_ms: Option<Located<i64>>,
    pub timeout_ms: Option<Located<i64>>,
    pub retries: Option<Located<i64>>,
}

/// `[services.update]` and `[clusters.update]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpdate {
    pub max_unavailable: Option<Located<RawCount>>,
    pub order: Option<Located<String>>,
    pub failure_action: Option<Located<String>>,
    pub gate_timeout_ms: Option<Located<i64>>,
}

/// A count written as an integer (`2`) or a percentage (`"50%"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawCount {
    Number(i64),
    Text(String),
}

/// The field path (`services[1].strategy`) of whatever is written at byte `offset` of a parsed
/// document, or `""` at the top level. Serde's errors carry a span but not a path; this gives them one.
pub(crate) fn path_at(doc: &toml_edit::Document<&str>, offset: usize) -> String {
    let mut path = String::new();
    table_path(doc.as_table(), offset, &mut path);
    path
}

fn covers(span: Option<Range<usize>>, offset: usize) -> bool {
    // An empty span (an error at a position, not a token) covers its one position.
    span.is_some_and(|s| s.contains(&offset) || s.start == offset)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Narrows `path` to the entry of `table` at `offset`; false (and `path` untouched) if none.
fn table_path(table: &toml_edit::Table, offset: usize, path: &mut String) -> bool {
    for (key, item) in table.iter() {
        let mut sub = join(path, key);
        if item_path(item, offset, &mut sub) || covers(table.key(key).and_then(toml_edit::Key::span), offset)
        {
            *path = sub;
            return true;
        }
    }
    false
}

fn item_path(item: &toml_edit::Item, offset: usize, path: &mut String) -> bool {
    use toml_edit::Item;
    match item {
        // A standard table's span is its header; its keys follow, so look at them first.
        Item::Table(t) => table_path(t, offset, path) || covers(t.span(), offset),
        Item::ArrayOfTables(tables) => tables.iter().enumerate().any(|(i, t)| {
            let mut sub = format!("{path}[{i}]");
            let found = table_path(t, offset, &mut sub) || covers(t.span(), offset);
            if found {
                *path = sub;
            }
            found
        }),
        Item::Value(v) => value_path(v, offset, path),
        Item::None => false,
    }
}

fn value_path(value: &toml_edit::Value, offset: usize, path: &mut String) -> bool {
    use toml_edit::Value;
    if !covers(value.span(), offset) {
        return false;
    }
    match value {
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let mut sub = format!("{path}[{i}]");
                if value_path(v, offset, &mut sub) {
                    *path = sub;
                    break;
                }
            }
        }
        Value::InlineTable(t) => {
            for (key, v) in t.iter() {
                let mut sub = join(path, key);
                if value_path(v, offset, &mut sub)
                    || covers(t.key(key).and_then(toml_edit::Key::span), offset)
                {
                    *path = sub;
                    break;
                }
            }
        }
        _ => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(text: &str, needle: &str) -> String {
        let doc = toml_edit::Document::parse(text).unwrap();
        path_at(&doc, text.find(needle).unwrap())
    }

    #[test]
    fn paths_are_found_for_keys_values_and_nested_tables() {
        let text = "name = \"n\"\n[[services]]\nname = \"a\"\n[[services]]\nname = \"b\"\nports = [1, 70000]\n\
                    env = { A = 1 }\n[services.health]\nretries = 0\n";
        assert_eq!(path_of(text, "\"n\""), "name");
        assert_eq!(path_of(text, "\"b\""), "services[1].name");
        assert_eq!(path_of(text, "70000"), "services[1].ports[1]");
        assert_eq!(path_of(text, "A ="), "services[1].env.A");
        assert_eq!(path_of(text, "1 }"), "services[1].env.A");
        assert_eq!(path_of(text, "retries"), "services[1].health.retries");
        assert_eq!(path_of(text, "[services.health]"), "services[1].health");
    }

    #[test]
    fn spans_survive_deserialization() {
        let text = "name = \"n\"\n[[clusters]]\nname = \"c\"\ntags = [\"x\"]\n";
        let raw: RawSpec = toml::from_str(text).unwrap();
        let tag = &raw.clusters[0].value.tags.as_ref().unwrap().value[0];
        assert_eq!(&text[tag.span.clone().unwrap()], "\"x\"");
        assert_eq!(&text[raw.clusters[0].span.clone().unwrap()], "[[clusters]]");
    }
}
