//! Dead letters: records that could not be decoded, kept with their raw bytes and reason.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::error::ArrowError;

use super::metadata;
use crate::source::RawBatch;

/// Bytes of a payload kept in the dead-letter table; `payload_bytes` has the full size.
/// A 100 MB message that failed to decode must not become a 100 MB row.
pub(super) const KEPT_PAYLOAD_BYTES: usize = 64 * 1024;

/// One record of a raw batch that failed to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Position in the raw batch.
    pub index: usize,
    pub reason: String,
}

/// Schema of a dead-letter table. The key is kept as bytes here: it is evidence, and may
/// not be text.
pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(metadata::TOPIC, DataType::Utf8, false),
        Field::new(metadata::PARTITION, DataType::Int32, false),
        Field::new(metadata::OFFSET, DataType::Int64, false),
        Field::new("kafka_key_bytes", DataType::Binary, true),
        Field::new(metadata::TIMESTAMP, metadata::timestamp_type(), true),
        Field::new("payload", DataType::Binary, false),
        Field::new("payload_bytes", DataType::Int64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("failed_at", metadata::timestamp_type(), false),
    ]))
}

/// Where the `pipeline` column stands in a dead-letter table.
const PIPELINE_COLUMN: usize = 8;

/// Schema of the dead letters a decode makes: the table's without `pipeline`, which
/// only the pipeline that files them can fill (see [`for_pipeline`]).
fn decoded_schema() -> SchemaRef {
    let mut fields: Vec<_> = dead_letter_schema().fields().iter().cloned().collect();
    fields.remove(PIPELINE_COLUMN);
    Arc::new(Schema::new(fields))
}

/// Dead letters decoded once for a source, labelled with the pipeline that files them:
/// the rows of its dead-letter table.
pub fn for_pipeline(dead: &RecordBatch, pipeline: &str) -> Result<RecordBatch, ArrowError> {
    let mut columns = dead.columns().to_vec();
    let label = StringArray::from_iter_values(std::iter::repeat_n(pipeline, dead.num_rows()));
    columns.insert(PIPELINE_COLUMN, Arc::new(label));
    RecordBatch::try_new(dead_letter_schema(), columns)
}

pub(super) fn to_batch(raw: &RawBatch, dead: &[DeadLetter]) -> Result<RecordBatch, ArrowError> {
    let indices: Vec<usize> = dead.iter().map(|d| d.index).collect();
    let meta = metadata::columns(raw, &indices);
    let key: BinaryArray = indices.iter().map(|&i| raw.key(i)).collect();
    let payload = BinaryArray::from_iter_values(indices.iter().map(|&i| {
        let p = raw.payload(i);
        &p[..p.len().min(KEPT_PAYLOAD_BYTES)]
    }));
    let sizes = Int64Array::from_iter_values(indices.iter().map(|&i| raw.payload(i).len() as i64));
    let reasons = StringArray::from_iter_values(dead.iter().map(|d| d.reason.as_str()));
    let now = chrono::Utc::now().timestamp_micros();
    let failed_at =
        TimestampMicrosecondArray::from_iter_values(dead.iter().map(|_| now)).with_timezone("UTC");
    let columns: Vec<ArrayRef> = vec![
        meta[0].clone(),
        meta[1].clone(),
        meta[2].clone(),
        Arc::new(key),
        meta[4].clone(),
        Arc::new(payload),
        Arc::new(sizes),
        Arc::new(reasons),
        Arc::new(failed_at),
    ];
    RecordBatch::try_new(decoded_schema(), columns)
}
