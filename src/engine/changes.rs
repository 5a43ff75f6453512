//! Upsert mode: a micro-batch of records (and tombstones) becomes one change per key,
//! flagged as an upsert or a delete, ready for a MERGE that must see each key once.

use std::collections::HashSet;
use std::sync::Arc;

use deltalake::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array,
};
use deltalake::arrow::compute::{cast, concat_batches, take_record_batch};
use deltalake::arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimestampMicrosecondType,
};
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::SessionContext;

use deltalake::arrow::error::ArrowError;

use super::EngineError;
use crate::config::kafka_columns::{self, OFFSET, PARTITION};

/// Column of a change batch: true where the change deletes its key.
pub const DELETE: &str = "_lakestream_delete";

/// How one upsert pipeline turns records into changes.
pub struct Changes {
    pipeline: String,
    keys: Vec<String>,
    /// SQL predicate marking a record as a delete (`delete_when`).
    delete_when: Option<String>,
    /// The table's columns (every one nullable), without the flag.
    schema: SchemaRef,
}

/// One batch's changes and the tombstones they apply.
pub struct Batch {
    /// The table's columns and [`DELETE`], one row per key, in offset order.
    pub rows: RecordBatch,
    /// (partition, offset) of the tombstones applied: their dead letters are dropped.
    pub tombstones: HashSet<(i32, i64)>,
}

impl Changes {
    pub fn new(
        pipeline: &str,
        keys: Vec<String>,
        delete_when: Option<String>,
        schema: SchemaRef,
    ) -> Self {
        Self {
            pipeline: pipeline.to_string(),
            keys,
            delete_when,
            schema,
        }
    }

    /// The columns that identify a row (the MERGE keys).
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The table schema with the delete flag: what [`Batch::rows`] holds.
    pub fn flagged_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(DELETE, DataType::Boolean, false));
        Arc::new(Schema::new(fields))
    }

    fn error(&self, message: impl ToString) -> EngineError {
        EngineError::Run {
            pipeline: self.pipeline.clone(),
            message: message.to_string(),
        }
    }

    /// Flag `rows` (deletes by `delete_when`) and `tombstones` (deletes), and keep the
    /// last change of each key: within a partition by offset; a key seen in two
    /// partitions (its producer re-keyed) keeps the later Kafka timestamp.
    pub async fn batch(
        &self,
        rows: &RecordBatch,
        tombstones: &RecordBatch,
    ) -> Result<Batch, EngineError> {
        let flags = self.delete_flags(rows).await?;
        let records = self.flagged(rows, flags)?;
        let keyed = self.with_keys(tombstones)?;
        let deletes = self.flagged(&keyed, BooleanArray::from(vec![true; keyed.num_rows()]))?;
        let all = concat_batches(&self.flagged_schema(), [&records, &deletes])
            .map_err(|e| self.error(e))?;
        let winners = self.last_per_key(&all)?;
        let rows = take_record_batch(&all, &winners).map_err(|e| self.error(e))?;
        let applied = metadata(&keyed).map_err(|e| self.error(e))?;
        Ok(Batch {
            rows,
            tombstones: applied.collect(),
        })
    }

    /// `delete_when` over the records (NULL counts as false).
    async fn delete_flags(&self, rows: &RecordBatch) -> Result<BooleanArray, EngineError> {
        let Some(predicate) = &self.delete_when else {
            return Ok(BooleanArray::from(vec![false; rows.num_rows()]));
        };
        let run = async {
            let ctx = SessionContext::new();
            let df = ctx.read_batch(rows.clone())?;
            let expr = df.parse_sql_expr(predicate)?;
            let flags = df.select(vec![expr.alias("flag")])?.collect().await?;
            Ok::<Vec<RecordBatch>, DataFusionError>(flags)
        };
        let batches = run
            .await
            .map_err(|e| self.error(format!("delete_when '{predicate}': {e}")))?;
        let mut out = Vec::with_capacity(rows.num_rows());
        for b in &batches {
            let column = cast(b.column(0), &DataType::Boolean).map_err(|e| {
                self.error(format!("delete_when '{predicate}' is not a predicate: {e}"))
            })?;
            out.extend(column.as_boolean().iter().map(|v| v.unwrap_or(false)));
        }
        Ok(BooleanArray::from(out))
    }

    /// Tombstones whose key columns are all present (the others delete nothing).
    fn with_keys(&self, tombstones: &RecordBatch) -> Result<RecordBatch, EngineError> {
        let mut keep = vec![true; tombstones.num_rows()];
        for k in &self.keys {
            let column = tombstones
                .column_by_name(k)
                .ok_or_else(|| self.error(format!("no key column '{k}'")))?;
            for (i, keep) in keep.iter_mut().enumerate() {
                *keep &= column.is_valid(i);
            }
        }
        deltalake::arrow::compute::filter_record_batch(tombstones, &BooleanArray::from(keep))
            .map_err(|e| self.error(e))
    }

    /// `batch`'s columns in the table's order (all nullable), with the flag appended.
    fn flagged(
        &self,
        batch: &RecordBatch,
        flags: BooleanArray,
    ) -> Result<RecordBatch, EngineError> {
        let mut columns: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .map(|f| {
                // A tombstone carries its key only: computed columns stay null.
                batch
                    .column_by_name(f.name())
                    .cloned()
                    .unwrap_or_else(|| new_null_array(f.data_type(), batch.num_rows()))
            })
            .collect();
        columns.push(Arc::new(flags));
        RecordBatch::try_new(self.flagged_schema(), columns).map_err(|e| self.error(e))
    }

    /// Row indices of the last change per key, in the order they came.
    fn last_per_key(&self, all: &RecordBatch) -> Result<UInt32Array, EngineError> {
        let partitions = column::<Int32Type>(all, PARTITION).map_err(|e| self.error(e))?;
        let offsets = column::<Int64Type>(all, OFFSET).map_err(|e| self.error(e))?;
        let timestamps = column::<TimestampMicrosecondType>(all, kafka_columns::TIMESTAMP).ok();
        let later = |a: usize, b: usize| -> bool {
            // Is row `a` a later change than row `b`?
            if partitions.value(a) == partitions.value(b) {
                return offsets.value(a) > offsets.value(b);
            }
            let ts = |i: usize| timestamps.and_then(|t| t.is_valid(i).then(|| t.value(i)));
            ts(a) >= ts(b)
        };
        super::keys::last_per_key(all, &self.keys, later).map_err(|e| self.error(e))
    }
}

fn column<'a, T: deltalake::arrow::datatypes::ArrowPrimitiveType>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a deltalake::arrow::array::PrimitiveArray<T>, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<T>())
        .ok_or_else(|| ArrowError::SchemaError(format!("no {name} column")))
}

/// (partition, offset) of each row.
fn metadata(batch: &RecordBatch) -> Result<impl Iterator<Item = (i32, i64)> + '_, ArrowError> {
    let partitions = column::<Int32Type>(batch, PARTITION)?;
    let offsets = column::<Int64Type>(batch, OFFSET)?;
    Ok(partitions
        .values()
        .iter()
        .copied()
        .zip(offsets.values().iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int32Array, Int64Array, StringArray};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("op", DataType::Utf8, true),
            Field::new("kafka_partition", DataType::Int32, true),
            Field::new("kafka_offset", DataType::Int64, true),
        ]))
    }

    fn batch(rows: &[(Option<i64>, &str, i32, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_last_change_of_each_key_wins_in_offset_order() {
        let changes = Changes::new("p", vec!["id".into()], Some("op = 'd'".into()), schema());
        let rows = batch(&[
            (Some(1), "c", 0, 10),
            (Some(2), "c", 0, 11),
            (Some(1), "u", 0, 12),
            (Some(2), "d", 0, 13),
            (Some(3), "c", 1, 5),
        ]);
        // Key 3's tombstone comes after its insert; a tombstone without a key deletes nothing.
        let tombstones = batch(&[(Some(3), "", 1, 6), (None, "", 1, 7)]);
        let out = changes.batch(&rows, &tombstones).await.unwrap();
        let ids = out
            .rows
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let deletes = out.rows.column_by_name(DELETE).unwrap().as_boolean();
        let got: Vec<(i64, bool)> = (0..out.rows.num_rows())
            .map(|i| (ids.value(i), deletes.value(i)))
            .collect();
        assert_eq!(got, vec![(1, false), (2, true), (3, true)]);
        assert_eq!(out.tombstones, HashSet::from([(1, 6)]));
    }
}
