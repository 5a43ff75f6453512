//! The last row of each key: what upsert changes keep of a batch (one change per key)
//! and what the MySQL mirror keeps of a change feed.

use std::collections::HashMap;

use deltalake::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::row::{RowConverter, SortField};

/// Indices of the last row of each key of `batch` (by the `keys` columns, NULL a value
/// like any other), in row order. A key's rows are compared in row order: `later(a, b)`
/// says whether row `a` replaces `b`, the key's row kept so far.
pub fn last_per_key(
    batch: &RecordBatch,
    keys: &[String],
    later: impl Fn(usize, usize) -> bool,
) -> Result<UInt32Array, ArrowError> {
    let key_columns: Vec<ArrayRef> = keys
        .iter()
        .map(|k| {
            batch
                .column_by_name(k)
                .cloned()
                .ok_or_else(|| ArrowError::SchemaError(format!("no key column '{k}'")))
        })
        .collect::<Result<_, _>>()?;
    let fields = key_columns
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    let rows = RowConverter::new(fields)?.convert_columns(&key_columns)?;
    let mut winner: HashMap<&[u8], usize> = HashMap::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        winner
            .entry(rows.row(i).data())
            .and_modify(|w| {
                if later(i, *w) {
                    *w = i;
                }
            })
            .or_insert(i);
    }
    let mut kept: Vec<u32> = winner.into_values().map(|i| i as u32).collect();
    kept.sort_unstable();
    Ok(UInt32Array::from(kept))
}
