//! JSON Schema through a Schema Registry: the record is JSON after the schema id; the
//! columns come from the schema's `properties` (local `$ref`s resolved). Records are not
//! validated against the schema (the producer's serializer does that): a value that
//! does not fit its column is a dead letter, a property the schema lacks is ignored.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{DataType, Field, Fields, SchemaRef, TimeUnit};
use deltalake::arrow::json::ReaderBuilder;
use serde_json::Value;

use super::avro::Written;
use super::columns::{self, Why};

#[derive(Debug, Clone)]
pub(super) struct JsonSchemaReader {
    pub payload: SchemaRef,
}

/// The versions merged into one reader; the ids of versions that could not join it.
pub(super) fn merge(versions: &[Written<'_>]) -> (Option<JsonSchemaReader>, HashMap<u32, String>) {
    let mut merged: Option<Vec<Field>> = None;
    let mut refused = HashMap::new();
    for v in versions {
        let attempt = serde_json::from_str::<Value>(v.schema)
            .map_err(|e| Why(format!("is not JSON: {e}")))
            .and_then(|schema| {
                let fields = object_fields(&schema, &schema, 0)?;
                match &merged {
                    Some(old) => columns::merge(old, &fields),
                    None => Ok(fields),
                }
            });
        match attempt {
            Ok(fields) => merged = Some(fields),
            Err(reason) => {
                refused.insert(
                    v.id,
                    format!("schema id {} (version {}) {reason}", v.id, v.version),
                );
            }
        }
    }
    let reader = merged.map(|fields| JsonSchemaReader {
        payload: columns::schema(fields),
    });
    (reader, refused)
}

/// `#/definitions/X`, `#/$defs/X` (any local JSON pointer) resolved against `root`.
fn resolve<'a>(schema: &'a Value, root: &'a Value, depth: usize) -> Result<&'a Value, Why> {
    match schema.get("$ref").and_then(Value::as_str) {
        None => Ok(schema),
        Some(_) if depth > 32 => Err("has a recursive $ref: a table cannot hold it".into()),
        Some(r) => {
            let target = r
                .strip_prefix('#')
                .and_then(|pointer| root.pointer(pointer))
                .ok_or_else(|| Why(format!("has a $ref '{r}' that is not a local definition")))?;
            resolve(target, root, depth + 1)
        }
    }
}

fn object_fields(schema: &Value, root: &Value, depth: usize) -> Result<Vec<Field>, Why> {
    let schema = resolve(schema, root, depth)?;
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Err("is not an object schema with properties".into());
    };
    let mut fields = Vec::new();
    for (name, property) in properties {
        // An object without properties has no columns to be: it is left out.
        if let Some(data_type) = data_type(property, root, depth + 1)
            .map_err(|e| Why(format!("property '{name}' {e}")))?
        {
            fields.push(Field::new(name, data_type, true));
        }
    }
    Ok(fields)
}

/// The column a property is (`None`: it has none).
fn data_type(schema: &Value, root: &Value, depth: usize) -> Result<Option<DataType>, Why> {
    if depth > 32 {
        return Err("nests over 32 levels".into());
    }
    let schema = resolve(schema, root, depth)?;
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => {
            // `oneOf`/`anyOf` of one type and null: a nullable column of that type.
            let branches = ["oneOf", "anyOf"]
                .iter()
                .find_map(|k| schema.get(*k).and_then(Value::as_array));
            let Some(branches) = branches else {
                return match schema.get("enum").or(schema.get("const")) {
                    Some(_) => Ok(Some(DataType::Utf8)),
                    None => Err("has no type".into()),
                };
            };
            let typed: Vec<&Value> = branches
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"))
                .collect();
            return match typed.as_slice() {
                [one] => data_type(one, root, depth + 1),
                _ => Err("is a union of several types: a column has one".into()),
            };
        }
    };
    let typed: Vec<&str> = types.into_iter().filter(|t| *t != "null").collect();
    let [one] = typed.as_slice() else {
        return Err(Why(format!("has types {typed:?}: a column has one")));
    };
    Ok(Some(match *one {
        "string" => match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Some("date") => DataType::Date32,
            _ => DataType::Utf8,
        },
        "integer" => DataType::Int64,
        "number" => DataType::Float64,
        "boolean" => DataType::Boolean,
        "array" => {
            let items = schema.get("items").ok_or("is an array without items")?;
            match data_type(items, root, depth + 1)? {
                Some(item) => DataType::List(Arc::new(Field::new("element", item, true))),
                None => return Ok(None),
            }
        }
        "object" => match schema.get("properties") {
            Some(_) => DataType::Struct(Fields::from(object_fields(schema, root, depth + 1)?)),
            None => match schema.get("additionalProperties").filter(|a| a.is_object()) {
                Some(values) => match data_type(values, root, depth + 1)? {
                    Some(value) => map_of(value),
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        },
        other => return Err(Why(format!("has type '{other}'"))),
    }))
}

fn map_of(value: DataType) -> DataType {
    let entries = Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", value, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

impl JsonSchemaReader {
    /// Decode `messages` (framed) in order: the payload rows, or the first message that
    /// fails (its position) with the reason.
    pub(super) fn decode_run(&self, messages: &[&[u8]]) -> Result<RecordBatch, (usize, String)> {
        let fail = |n, reason| (n, format!("JSON record does not decode: {reason}"));
        let (at, whole) = match self.decode(messages) {
            Ok(batch) => return Ok(batch),
            Err(e) => e,
        };
        // The tape stops at a message that is not JSON, but an earlier one may hold a
        // value its column cannot take (found only when the columns are built).
        let end = at.unwrap_or(messages.len());
        if at.is_some() && self.decode(&messages[..end]).is_ok() {
            return Err(fail(end, whole));
        }
        let first = columns::first_failing(end, |k| self.decode(&messages[..k]).is_err());
        let reason = self
            .decode(&messages[first..=first])
            .err()
            .map_or(whole, |(_, r)| r);
        Err(fail(first, reason))
    }

    fn decode(&self, messages: &[&[u8]]) -> Result<RecordBatch, (Option<usize>, String)> {
        let mut decoder = ReaderBuilder::new(self.payload.clone())
            .with_batch_size(messages.len() + 1)
            .build_decoder()
            .map_err(|e| (None, e.to_string()))?;
        for (n, message) in messages.iter().enumerate() {
            let body = message.get(5..).unwrap_or_default();
            let first = body.iter().position(|b| !b.is_ascii_whitespace());
            if body.get(first.unwrap_or(0)) != Some(&b'{') {
                return Err((Some(n), "not a JSON object".into()));
            }
            decoder.decode(body).map_err(|e| (Some(n), e.to_string()))?;
            if decoder.has_partial_record() {
                return Err((Some(n), "truncated: the object does not end".into()));
            }
            if decoder.len() != n + 1 {
                return Err((Some(n), "more than one JSON value in the message".into()));
            }
        }
        let batch = decoder.flush().map_err(|e| (None, e.to_string()))?;
        Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(self.payload.clone())))
    }
}
