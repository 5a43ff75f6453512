//! The fast path: JSON objects straight into Arrow builders, one pass per message, no
//! intermediate tape. It takes only the plain case (every declared field absent, null or
//! of its JSON type, no duplicate keys, one object per message) and gives up on anything
//! else, so the general decoder (arrow-json, with bisection and reasons) still decides
//! every message that is not plain: the two agree by construction on what they both take.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder,
};
use deltalake::arrow::compute::kernels::cast_utils::Parser;
use deltalake::arrow::datatypes::{DataType, Date32Type, SchemaRef};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::source::RawBatch;

/// Decodes into the JSON schema when every field's JSON type is one it builds.
#[derive(Debug)]
pub(super) struct FastDecoder {
    schema: SchemaRef,
    kinds: Vec<Kind>,
    by_name: HashMap<String, usize>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Utf8,
    Date32,
    Int32,
    Int64,
    Float64,
    Boolean,
}

/// Not the plain case: the general decoder takes over.
#[derive(Debug)]
pub(super) struct NotPlain;

impl FastDecoder {
    /// `None` when a field's JSON type needs the general decoder (epoch numbers).
    pub(super) fn new(json_schema: &SchemaRef) -> Option<Self> {
        let kinds = json_schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => Some(Kind::Utf8),
                DataType::Date32 => Some(Kind::Date32),
                DataType::Int32 => Some(Kind::Int32),
                DataType::Int64 => Some(Kind::Int64),
                DataType::Float64 => Some(Kind::Float64),
                DataType::Boolean => Some(Kind::Boolean),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let by_name = json_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().clone(), i))
            .collect();
        Some(Self {
            schema: json_schema.clone(),
            kinds,
            by_name,
        })
    }

    /// Decode the messages `indices` of `raw` as one batch of the JSON schema.
    pub(super) fn decode(
        &self,
        raw: &RawBatch,
        indices: &[usize],
    ) -> Result<RecordBatch, NotPlain> {
        let bytes: usize = indices.iter().map(|&i| raw.payload(i).len()).sum();
        let mut builders: Vec<Builder> = self
            .kinds
            .iter()
            .map(|k| Builder::new(*k, indices.len(), bytes / self.kinds.len().max(1)))
            .collect();
        let mut seen = vec![0u32; self.kinds.len()];
        let mut order = Vec::with_capacity(self.kinds.len() + 4);
        for (row, &i) in indices.iter().enumerate() {
            let stamp = row as u32 + 1;
            let mut de = serde_json::Deserializer::from_slice(raw.payload(i));
            de.deserialize_map(Row {
                decoder: self,
                builders: &mut builders,
                seen: &mut seen,
                order: &mut order,
                stamp,
            })
            .map_err(|_| NotPlain)?;
            de.end().map_err(|_| NotPlain)?;
            for (f, b) in builders.iter_mut().enumerate() {
                if seen[f] != stamp {
                    if !self.schema.field(f).is_nullable() {
                        return Err(NotPlain);
                    }
                    b.append_null();
                }
            }
        }
        let columns: Vec<ArrayRef> = builders.iter_mut().map(Builder::finish).collect();
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|_| NotPlain)
    }
}

enum Builder {
    Utf8(StringBuilder),
    Date32(Date32Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
}

impl Builder {
    fn new(kind: Kind, rows: usize, bytes: usize) -> Self {
        match kind {
            Kind::Utf8 => Self::Utf8(StringBuilder::with_capacity(rows, bytes)),
            Kind::Date32 => Self::Date32(Date32Builder::with_capacity(rows)),
            Kind::Int32 => Self::Int32(Int32Builder::with_capacity(rows)),
            Kind::Int64 => Self::Int64(Int64Builder::with_capacity(rows)),
            Kind::Float64 => Self::Float64(Float64Builder::with_capacity(rows)),
            Kind::Boolean => Self::Boolean(BooleanBuilder::with_capacity(rows)),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Utf8(b) => b.append_null(),
            Self::Date32(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Boolean(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Utf8(b) => Arc::new(b.finish()),
            Self::Date32(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Boolean(b) => Arc::new(b.finish()),
        }
    }
}

/// One message: a JSON object whose declared fields go to their builders.
struct Row<'a> {
    decoder: &'a FastDecoder,
    builders: &'a mut [Builder],
    seen: &'a mut [u32],
    /// The keys of the last message in their order, with what each resolved to.
    order: &'a mut Vec<(String, Option<usize>)>,
    stamp: u32,
}

impl<'de> Visitor<'de> for Row<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let mut position = 0;
        while let Some(field) = map.next_key_seed(Key {
            by_name: &self.decoder.by_name,
            order: self.order,
            position,
        })? {
            position += 1;
            let Some(f) = field else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if self.seen[f] == self.stamp {
                return Err(A::Error::custom("duplicate key"));
            }
            self.seen[f] = self.stamp;
            // Appends exactly one value, or fails (every other JSON type is refused).
            let nullable = self.decoder.schema.field(f).is_nullable();
            map.next_value_seed(Value(&mut self.builders[f], nullable))?;
        }
        Ok(())
    }
}

/// A key, looked up among the declared fields as it is read: no copy of the name (an
/// owned key would cost an allocation per field per message). A producer writes its
/// keys in one order, so the key at `position` is first compared with the one the last
/// message had there: a match costs one comparison instead of hashing the name (10% of
/// the decode's CPU was the lookup).
struct Key<'a> {
    by_name: &'a HashMap<String, usize>,
    order: &'a mut Vec<(String, Option<usize>)>,
    position: usize,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        match self.order.get_mut(self.position) {
            Some((name, field)) if name == v => Ok(*field),
            seen => {
                let field = self.by_name.get(v).copied();
                match seen {
                    Some(slot) => *slot = (v.to_string(), field),
                    None => self.order.push((v.to_string(), field)),
                }
                Ok(field)
            }
        }
    }
}

/// One declared field's value, appended to its builder when it has the field's JSON type
/// (null only where the field is nullable).
struct Value<'a>(&'a mut Builder, bool);

impl<'de> DeserializeSeed<'de> for Value<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Value<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value of the declared type")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        if !self.1 {
            return Err(E::custom("null in a required field"));
        }
        self.0.append_null();
        Ok(())
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<(), E> {
        self.visit_str(v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        match self.0 {
            Builder::Utf8(b) => {
                b.append_value(v);
                Ok(())
            }
            // The parser arrow-json uses for a date column, so both read a date alike.
            Builder::Date32(b) => {
                let days = Date32Type::parse(v).ok_or_else(|| E::custom("not a date"))?;
                b.append_value(days);
                Ok(())
            }
            _ => Err(E::custom("a string in a non-string field")),
        }
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        match self.0 {
            Builder::Boolean(b) => {
                b.append_value(v);
                Ok(())
            }
            _ => Err(E::custom("a boolean in a non-boolean field")),
        }
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        match self.0 {
            Builder::Int64(b) => {
                b.append_value(v);
                Ok(())
            }
            Builder::Int32(b) => {
                let v = i32::try_from(v).map_err(|_| E::custom("out of range"))?;
                b.append_value(v);
                Ok(())
            }
            Builder::Float64(b) => {
                b.append_value(v as f64);
                Ok(())
            }
            _ => Err(E::custom("a number in a non-number field")),
        }
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::custom("out of range")),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        match self.0 {
            Builder::Float64(b) => {
                b.append_value(v);
                Ok(())
            }
            _ => Err(E::custom("a fraction in a non-double field")),
        }
    }
}
