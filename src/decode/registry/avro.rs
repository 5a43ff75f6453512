//! Avro: the table's reader schema merged from every version of the subject, and the
//! Confluent-framed messages decoded against it (arrow-avro resolves each writer's
//! version to it: fields added with defaults, removed, promoted).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use serde_json::{json, Value};

use super::delta_types;

/// Why a version or a record cannot be read (a dead letter's reason).
#[derive(Debug, thiserror::Error)]
pub(super) enum Unreadable {
    #[error("is not JSON: {0}")]
    NotJson(String),
    #[error("is not an Avro record")]
    NotRecord,
    #[error("is not a valid Avro schema: {0}")]
    Invalid(String),
    #[error("cannot be read as the table's schema: {0}")]
    Resolution(String),
    #[error(
        "changes column '{column}' from {from} to {to}: the table keeps its column types \
         (write the new type under a new field name)"
    )]
    ColumnType {
        column: String,
        from: String,
        to: String,
    },
    #[error("{0}")]
    Decode(String),
    #[error("{0} bytes left after the record")]
    Trailing(usize),
    #[error("truncated: the payload ends inside the record")]
    Truncated,
}

fn decode_error(e: impl std::fmt::Display) -> Unreadable {
    Unreadable::Decode(e.to_string())
}

/// The reader schema and the writers (schema ids) it reads.
#[derive(Debug, Clone)]
pub(super) struct AvroReader {
    reader: AvroSchema,
    store: SchemaStore,
    /// The payload columns, as Delta holds them.
    pub payload: SchemaRef,
    /// arrow-avro's types for `payload`, before they are made Delta's.
    decoded: Vec<Field>,
}

/// One version of a subject.
pub(super) struct Written<'a> {
    pub id: u32,
    pub version: i32,
    pub schema: &'a str,
}

/// The versions `versions` (oldest first) merged into one reader; the ids of versions
/// that could not join it, with the reason.
pub(super) fn merge(versions: &[Written<'_>]) -> (Option<AvroReader>, HashMap<u32, String>) {
    let mut merged: Option<(Value, AvroReader)> = None;
    let mut ids: Vec<(u32, String)> = Vec::new();
    let mut refused = HashMap::new();
    for v in versions {
        let attempt = serde_json::from_str::<Value>(v.schema)
            .map_err(|e| Unreadable::NotJson(e.to_string()))
            .and_then(|schema| {
                let candidate = match &merged {
                    None => schema,
                    Some((m, _)) => merge_record(m, &schema)?,
                };
                let mut with = ids.clone();
                with.push((v.id, v.schema.to_string()));
                let reader = AvroReader::new(&candidate, &with)?;
                if let Some((_, old)) = &merged {
                    same_columns(&old.payload, &reader.payload)?;
                }
                Ok((candidate, reader))
            });
        match attempt {
            Ok(next) => {
                ids.push((v.id, v.schema.to_string()));
                merged = Some(next);
            }
            Err(reason) => {
                refused.insert(
                    v.id,
                    format!("schema id {} (version {}) {reason}", v.id, v.version),
                );
            }
        }
    }
    (merged.map(|(_, r)| r), refused)
}

/// `next`'s fields over `merged`'s: a field both have takes `next`'s definition, a field
/// only one has is kept, nullable with a null default: a record whose version lacks it
/// reads as null, never as the default, so a row does not depend on when it was read
/// (before or after the version that added the field was registered).
fn merge_record(merged: &Value, next: &Value) -> Result<Value, Unreadable> {
    let fields_of = |v: &Value| match (v.get("type").and_then(Value::as_str), v.get("fields")) {
        (Some("record"), Some(Value::Array(f))) => Ok(f.clone()),
        _ => Err(Unreadable::NotRecord),
    };
    let (old, new) = (fields_of(merged)?, fields_of(next)?);
    let name = |f: &Value| f.get("name").and_then(Value::as_str).map(str::to_string);
    let mut out: Vec<Value> = old
        .iter()
        .map(|f| match new.iter().find(|n| name(n) == name(f)) {
            // Once some version lacked it, it stays nullable.
            Some(n) if is_nullable(f) => nullable(n),
            Some(n) => n.clone(),
            None => nullable(f),
        })
        .collect();
    out.extend(
        new.iter()
            .filter(|n| !old.iter().any(|f| name(f) == name(n)))
            .map(nullable),
    );
    let mut record = next.clone();
    record["fields"] = Value::Array(out);
    Ok(record)
}

fn is_nullable(field: &Value) -> bool {
    field.get("default") == Some(&Value::Null)
        && field
            .get("type")
            .and_then(Value::as_array)
            .and_then(|b| b.first())
            == Some(&json!("null"))
}

/// `field` as a null-first union with a null default.
fn nullable(field: &Value) -> Value {
    let mut f = field.clone();
    f["type"] = match f.get("type").cloned().unwrap_or(Value::Null) {
        Value::Array(branches) => {
            let mut out = vec![json!("null")];
            out.extend(branches.into_iter().filter(|b| b != &json!("null")));
            Value::Array(out)
        }
        other => json!(["null", other]),
    };
    f["default"] = Value::Null;
    f
}

/// A new version may add columns, never change one's type: the table's files hold it.
fn same_columns(old: &Schema, new: &Schema) -> Result<(), Unreadable> {
    for field in old.fields() {
        if let Ok(now) = new.field_with_name(field.name()) {
            if now.data_type() != field.data_type() {
                return Err(Unreadable::ColumnType {
                    column: field.name().clone(),
                    from: field.data_type().to_string(),
                    to: now.data_type().to_string(),
                });
            }
        }
    }
    Ok(())
}

impl AvroReader {
    /// Reads nothing: before the registry has answered.
    pub(super) fn empty() -> Self {
        Self {
            reader: AvroSchema::new(String::new()),
            store: SchemaStore::new_with_type(FingerprintAlgorithm::Id),
            payload: Arc::new(Schema::empty()),
            decoded: Vec::new(),
        }
    }

    /// `reader` reading the writers `ids`.
    fn new(reader: &Value, ids: &[(u32, String)]) -> Result<Self, Unreadable> {
        let reader = AvroSchema::new(reader.to_string());
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        for (id, schema) in ids {
            store
                .set(Fingerprint::Id(*id), AvroSchema::new(schema.clone()))
                .map_err(|e| Unreadable::Invalid(e.to_string()))?;
        }
        let decoder = ReaderBuilder::new()
            .with_writer_schema_store(store.clone())
            .with_reader_schema(reader.clone())
            .build_decoder()
            .map_err(|e| Unreadable::Resolution(e.to_string()))?;
        let decoded: Vec<Field> = decoder
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let payload = Schema::new(decoded.iter().map(delta_types::field).collect::<Vec<_>>());
        Ok(Self {
            reader,
            store,
            payload: Arc::new(payload),
            decoded,
        })
    }

    fn decoder(&self, rows: usize) -> Result<Decoder, Unreadable> {
        ReaderBuilder::new()
            .with_writer_schema_store(self.store.clone())
            .with_reader_schema(self.reader.clone())
            .with_batch_size(rows + 1)
            .build_decoder()
            .map_err(decode_error)
    }

    /// Decode `messages` (framed) in order: the payload rows, or the first message that
    /// fails (its position) with the reason.
    pub(super) fn decode_run(
        &self,
        messages: &[&[u8]],
    ) -> Result<RecordBatch, (usize, Unreadable)> {
        let mut decoder = self.decoder(messages.len()).map_err(|e| (0, e))?;
        let mut batches = Vec::new();
        let mut flushed = 0;
        for (n, message) in messages.iter().enumerate() {
            let mut at = 0;
            while at < message.len() {
                let used = match decoder.decode(&message[at..]) {
                    Ok(used) => used,
                    // The record ended and the rest was taken for the next frame.
                    Err(_) if flushed + decoder.batch_size() - decoder.capacity() == n + 1 => {
                        return Err((n, Unreadable::Trailing(message.len() - at)))
                    }
                    Err(e) => return Err((n, decode_error(e))),
                };
                at += used;
                if at < message.len() {
                    if !decoder.batch_is_full() {
                        return Err((n, Unreadable::Trailing(message.len() - at)));
                    }
                    // A new writer schema: arrow-avro flushes the rows of the previous one.
                    flushed += self.flush(&mut decoder, &mut batches).map_err(|e| (n, e))?;
                }
            }
            let rows = flushed + decoder.batch_size() - decoder.capacity();
            if rows != n + 1 {
                return Err((n, Unreadable::Truncated));
            }
        }
        self.flush(&mut decoder, &mut batches).map_err(|e| (0, e))?;
        let schema = self.payload.clone();
        deltalake::arrow::compute::concat_batches(&schema, &batches)
            .map_err(|e| (0, decode_error(e)))
    }

    fn flush(
        &self,
        decoder: &mut Decoder,
        out: &mut Vec<RecordBatch>,
    ) -> Result<usize, Unreadable> {
        let Some(batch) = decoder.flush().map_err(decode_error)? else {
            return Ok(0);
        };
        let columns = batch
            .columns()
            .iter()
            .zip(&self.decoded)
            .map(|(c, f)| delta_types::array(c, f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(decode_error)?;
        let rows = batch.num_rows();
        out.push(RecordBatch::try_new(self.payload.clone(), columns).map_err(decode_error)?);
        Ok(rows)
    }
}
