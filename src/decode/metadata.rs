//! Kafka metadata columns appended to every decoded row.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use deltalake::arrow::error::ArrowError;

use crate::source::RawBatch;

pub(crate) use crate::config::kafka_columns::{KEY, OFFSET, PARTITION, TIMESTAMP, TOPIC};

pub(super) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub(super) fn fields() -> Vec<Arc<Field>> {
    vec![
        Arc::new(Field::new(TOPIC, DataType::Utf8, false)),
        Arc::new(Field::new(PARTITION, DataType::Int32, false)),
        Arc::new(Field::new(OFFSET, DataType::Int64, false)),
        Arc::new(Field::new(KEY, DataType::Utf8, true)),
        Arc::new(Field::new(TIMESTAMP, timestamp_type(), true)),
    ]
}

/// The metadata columns of the records `indices` of `raw`, in that order.
pub(super) fn columns(raw: &RawBatch, indices: &[usize]) -> Vec<ArrayRef> {
    let topic = StringArray::from_iter_values(indices.iter().map(|_| raw.topic.as_ref()));
    let partition = Int32Array::from_iter_values(indices.iter().map(|&i| raw.partition(i)));
    let offset = Int64Array::from_iter_values(indices.iter().map(|&i| raw.offset(i)));
    let key: StringArray = indices
        .iter()
        .map(|&i| raw.key(i).map(String::from_utf8_lossy))
        .collect();
    let timestamp = TimestampMicrosecondArray::from_iter(
        indices
            .iter()
            .map(|&i| raw.timestamp_ms(i).map(|ms| ms * 1000)),
    )
    .with_timezone("UTC");
    vec![
        Arc::new(topic),
        Arc::new(partition),
        Arc::new(offset),
        Arc::new(key),
        Arc::new(timestamp),
    ]
}

/// `payload` (decoded from `indices`) plus the metadata columns, as `schema`.
/// `payload`'s first `declared` columns, the metadata columns, then its other (learned)
/// columns: the table's column order.
pub(super) fn append_columns(
    payload: &RecordBatch,
    raw: &RawBatch,
    indices: &[usize],
    schema: &SchemaRef,
    declared: usize,
) -> Result<RecordBatch, ArrowError> {
    let (declared, learned) = payload
        .columns()
        .split_at(declared.min(payload.num_columns()));
    let mut columns = declared.to_vec();
    columns.extend(self::columns(raw, indices));
    columns.extend_from_slice(learned);
    RecordBatch::try_new(schema.clone(), columns)
}
