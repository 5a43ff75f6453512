//! Schema evolution (`schema_evolution = "add_columns"`): fields that are not declared
//! and show up in the data become nullable columns. The first non-null value decides
//! the type (string, int64, double, boolean; nested objects and arrays are stored as
//! JSON text in a string column); a later value of another type is a dead letter with
//! the reason, never a silent cast (an integer in a double column is exact, so taken).

use std::collections::{HashMap, HashSet};
use std::fmt;

use deltalake::arrow::datatypes::DataType;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tracing::{info, warn};

use super::Rejected;
use crate::config::{is_identifier, FieldType};
use crate::source::RawBatch;

/// Columns a stream may add: a stream keyed by ids (a map, not a record) would
/// otherwise grow the table without end.
const MAX_LEARNED: usize = 200;

/// The type of a learned column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Strings, and nested objects or arrays as JSON text.
    Text,
    Int,
    Double,
    Bool,
}

impl Kind {
    pub(super) fn field_type(self) -> FieldType {
        match self {
            Self::Text => FieldType::String,
            Self::Int => FieldType::Int64,
            Self::Double => FieldType::Double,
            Self::Bool => FieldType::Boolean,
        }
    }

    /// The kind of a column the table already has (learned by an earlier run).
    pub(super) fn of(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Self::Text,
            DataType::Int64 => Self::Int,
            DataType::Float64 => Self::Double,
            DataType::Boolean => Self::Bool,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Text => "string",
            Self::Int => "int64",
            Self::Double => "double",
            Self::Bool => "boolean",
        }
    }
}

/// What a JSON value is, read without building it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Null,
    Text,
    Int,
    /// An integer beyond int64.
    BigInt,
    Double,
    Bool,
    Nested,
}

impl Value {
    fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Text => "a string",
            Self::Int => "an integer",
            Self::BigInt => "an integer beyond int64",
            Self::Double => "a fraction",
            Self::Bool => "a boolean",
            Self::Nested => "an object or array",
        }
    }

    /// The kind a first value gives its column.
    fn kind(self) -> Option<Kind> {
        match self {
            Self::Null => None,
            Self::Text | Self::Nested => Some(Kind::Text),
            Self::Int => Some(Kind::Int),
            Self::BigInt | Self::Double => Some(Kind::Double),
            Self::Bool => Some(Kind::Bool),
        }
    }

    fn fits(self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Self::Null, _)
                | (Self::Text | Self::Nested, Kind::Text)
                | (Self::Int, Kind::Int)
                | (Self::Int | Self::BigInt | Self::Double, Kind::Double)
                | (Self::Bool, Kind::Bool)
        )
    }
}

/// The columns learned so far, in the order they were added.
#[derive(Debug, Clone, Default)]
pub(super) struct Learner {
    declared: HashSet<String>,
    learned: Vec<(String, Kind)>,
    kinds: HashMap<String, Kind>,
    /// Keys that cannot become columns (logged once).
    refused: HashSet<String>,
}

/// One batch's verdicts.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Columns first seen in this batch.
    pub added: Vec<(String, Kind)>,
    /// Records whose value does not fit a learned column, with the reason.
    pub conflicts: HashMap<usize, Rejected>,
    /// Records holding an object or array in a learned text column (to be rewritten
    /// as JSON text before decoding).
    pub nested: HashSet<usize>,
}

impl Learner {
    pub(super) fn new(declared: impl IntoIterator<Item = String>) -> Self {
        Self {
            declared: declared.into_iter().collect(),
            ..Self::default()
        }
    }

    pub(super) fn learned(&self) -> &[(String, Kind)] {
        &self.learned
    }

    /// Take a column the table already has.
    pub(super) fn know(&mut self, name: &str, kind: Kind) {
        if !self.declared.contains(name) && !self.kinds.contains_key(name) {
            self.kinds.insert(name.to_string(), kind);
            self.learned.push((name.to_string(), kind));
        }
    }

    /// Learn from the records of `raw` not in `skip`.
    pub(super) fn scan(&mut self, raw: &RawBatch, skip: &HashMap<usize, Rejected>) -> Scan {
        let mut scan = Scan::default();
        let mut fields = Vec::new();
        for i in 0..raw.len() {
            if raw.is_tombstone(i) || skip.contains_key(&i) {
                continue;
            }
            fields.clear();
            let mut de = serde_json::Deserializer::from_slice(raw.payload(i));
            // A message that is no JSON object is the decoder's to explain.
            if de
                .deserialize_map(Undeclared {
                    declared: &self.declared,
                    out: &mut fields,
                })
                .is_err()
            {
                continue;
            }
            for (name, value) in fields.drain(..) {
                match self.kinds.get(&name) {
                    Some(&kind) if !value.fits(kind) => {
                        scan.conflicts
                            .entry(i)
                            .or_insert_with(|| Rejected::Learned {
                                field: name.clone(),
                                kind: kind.name().into(),
                                value: value.name().into(),
                            });
                    }
                    Some(&kind) => {
                        if kind == Kind::Text && value == Value::Nested {
                            scan.nested.insert(i);
                        }
                    }
                    None => self.learn(&name, value, i, &mut scan),
                }
            }
        }
        scan
    }

    fn learn(&mut self, name: &str, value: Value, record: usize, scan: &mut Scan) {
        let Some(kind) = value.kind() else { return };
        let reserved = super::METADATA_COLUMNS.contains(&name);
        if reserved || !is_identifier(name) || self.learned.len() >= MAX_LEARNED {
            if self.refused.insert(name.to_string()) {
                warn!(
                    field = name,
                    "undeclared field not added as a column: its name is not an identifier, \
                     is reserved, or {MAX_LEARNED} columns were added already; declare it \
                     under another name or ignore it"
                );
            }
            return;
        }
        info!(
            field = name,
            kind = kind.name(),
            "new field: adding a column"
        );
        if value == Value::Nested {
            scan.nested.insert(record);
        }
        self.kinds.insert(name.to_string(), kind);
        self.learned.push((name.to_string(), kind));
        scan.added.push((name.to_string(), kind));
    }

    /// `payload` with objects and arrays in learned text columns turned into JSON text.
    pub(super) fn flatten_nested(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(payload).ok()?;
        for (name, value) in map.iter_mut() {
            if self.kinds.get(name) == Some(&Kind::Text) && (value.is_object() || value.is_array())
            {
                *value = serde_json::Value::String(value.to_string());
            }
        }
        serde_json::to_vec(&map).ok()
    }
}

/// The undeclared fields of one JSON object and what their values are.
struct Undeclared<'a> {
    declared: &'a HashSet<String>,
    out: &'a mut Vec<(String, Value)>,
}

impl<'de> Visitor<'de> for Undeclared<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key_seed(NewKey(self.declared))? {
            match name {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(name) => {
                    let value = map.next_value_seed(Kinds)?;
                    self.out.push((name, value));
                }
            }
        }
        Ok(())
    }
}

/// A key, copied only when it is not declared.
struct NewKey<'a>(&'a HashSet<String>);

impl<'de> DeserializeSeed<'de> for NewKey<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NewKey<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<String>, E> {
        Ok((!self.0.contains(v)).then(|| v.to_string()))
    }
}

/// What a value is, skipping over it.
struct Kinds;

impl<'de> DeserializeSeed<'de> for Kinds {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Kinds {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Text)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Bool)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Int)
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(if i64::try_from(v).is_ok() {
            Value::Int
        } else {
            Value::BigInt
        })
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Double)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Nested)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Nested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(payloads: &[&str]) -> RawBatch {
        let mut raw = RawBatch::new("t".into());
        for (i, p) in payloads.iter().enumerate() {
            raw.push(0, i as i64, None, None, Some(p.as_bytes()));
        }
        raw
    }

    #[test]
    fn first_values_decide_and_later_conflicts_are_named() {
        let mut l = Learner::new(["id".to_string()]);
        let raw = batch(&[
            r#"{"id":1,"a":null}"#,
            r#"{"id":2,"a":3,"b":{"x":[1]},"c":"s","kafka_offset":1,"bad name":1}"#,
            r#"{"id":3,"a":"three","d":1.5}"#,
            r#"{"id":4,"b":"text too","d":2}"#,
        ]);
        let scan = l.scan(&raw, &HashMap::new());
        let added: Vec<(&str, Kind)> = scan.added.iter().map(|(n, k)| (n.as_str(), *k)).collect();
        assert_eq!(
            added,
            [
                ("a", Kind::Int),
                ("b", Kind::Text),
                ("c", Kind::Text),
                ("d", Kind::Double)
            ]
        );
        assert_eq!(scan.conflicts.keys().copied().collect::<Vec<_>>(), [2]);
        assert!(
            scan.conflicts[&2]
                .to_string()
                .contains("'a' was added to the table as int64"),
            "{:?}",
            scan.conflicts
        );
        assert_eq!(scan.nested, HashSet::from([1]));
        let flat = l.flatten_nested(raw.payload(1)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&flat).unwrap();
        assert_eq!(v["b"], r#"{"x":[1]}"#);
    }
}
