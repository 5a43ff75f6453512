//! What the Protobuf and JSON Schema readers share: a subject's versions merged into one
//! set of columns, and rows (as JSON values shaped like those columns) made a batch.

use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::arrow::json::ReaderBuilder;
use serde_json::Value;

/// Why a schema version or a record cannot be read: a refusal's or a dead letter's
/// reason, as the user reads it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(super) struct Why(pub String);

impl From<String> for Why {
    fn from(reason: String) -> Self {
        Self(reason)
    }
}

impl From<&str> for Why {
    fn from(reason: &str) -> Self {
        Self(reason.to_string())
    }
}

/// `next`'s columns over `merged`'s: a column both have keeps its place and must keep
/// its type; a column only one has stays, nullable (a record whose version lacks it
/// reads as null). A changed type refuses `next`, naming the column.
pub(super) fn merge(merged: &[Field], next: &[Field]) -> Result<Vec<Field>, Why> {
    let mut out: Vec<Field> = merged.to_vec();
    for field in next {
        match out.iter().find(|f| f.name() == field.name()) {
            Some(old) if old.data_type() != field.data_type() => {
                return Err(Why(format!(
                    "changes field '{}' from {} to {}: a column's type cannot change (a new \
                     field name can be added instead)",
                    field.name(),
                    old.data_type(),
                    field.data_type()
                )))
            }
            Some(_) => {}
            None => out.push(field.clone().with_nullable(true)),
        }
    }
    Ok(out)
}

/// Every column nullable: versions may lack any of them.
pub(super) fn schema(fields: Vec<Field>) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .into_iter()
            .map(|f| f.with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// `rows` as a batch of `schema`, or the first row that does not fit it (its position)
/// with the reason.
pub(super) fn batch(schema: &SchemaRef, rows: &[Value]) -> Result<RecordBatch, (usize, String)> {
    let attempt = |rows: &[Value]| -> Result<RecordBatch, Why> {
        let mut decoder = ReaderBuilder::new(schema.clone())
            .with_batch_size(rows.len().max(1))
            .build_decoder()
            .map_err(|e| e.to_string())?;
        decoder.serialize(rows).map_err(|e| e.to_string())?;
        Ok(decoder
            .flush()
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
    };
    attempt(rows).map_err(|whole| {
        let at = first_failing(rows.len(), |k| attempt(&rows[..k]).is_err());
        (at, attempt(&rows[at..=at]).err().unwrap_or(whole).0)
    })
}

/// The first of `len` records that fails, where `prefix_fails(k)` says whether the
/// first `k` fail together (it does for `len`): a bisection, as arrow-json checks a
/// value against its column only when it builds the columns, for all rows at once.
pub(super) fn first_failing(len: usize, prefix_fails: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (1, len.max(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match prefix_fails(mid) {
            true => hi = mid,
            false => lo = mid + 1,
        }
    }
    hi - 1
}

/// Bytes as arrow-json reads a binary column: hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
