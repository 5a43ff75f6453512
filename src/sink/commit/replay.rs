//! A replayed batch (after a crash or a rebalance) holds records the table already has:
//! only the part above each partition's recorded offset is committed.

use std::collections::{BTreeMap, HashMap};

use deltalake::arrow::array::{AsArray, BooleanArray, RecordBatch};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{Int32Type, Int64Type};
use deltalake::DeltaTableError;

use super::batch::BatchInfo;
use crate::config::kafka_columns;
use crate::source::OffsetRange;

/// The part of each partition's range the table does not hold yet; `None` if nothing.
pub(super) fn new_ranges(
    ranges: &BTreeMap<i32, OffsetRange>,
    committed: &HashMap<i32, Option<i64>>,
) -> Option<BTreeMap<i32, OffsetRange>> {
    let new: BTreeMap<i32, OffsetRange> = ranges
        .iter()
        .filter_map(|(&p, r)| match committed.get(&p).copied().flatten() {
            Some(c) if c >= r.last => None,
            Some(c) if c >= r.first => Some((
                p,
                OffsetRange {
                    first: c + 1,
                    last: r.last,
                },
            )),
            _ => Some((p, *r)),
        })
        .collect();
    (!new.is_empty()).then_some(new)
}

/// Rows whose offset is above what the table holds for their partition.
pub(super) fn drop_committed(
    rows: &RecordBatch,
    committed: &HashMap<i32, Option<i64>>,
) -> Result<RecordBatch, DeltaTableError> {
    let column = |name: &str| {
        rows.column_by_name(name)
            .ok_or_else(|| DeltaTableError::Generic(format!("batch has no column {name}")))
    };
    let partitions = column(kafka_columns::PARTITION)?.as_primitive::<Int32Type>();
    let offsets = column(kafka_columns::OFFSET)?.as_primitive::<Int64Type>();
    let mask: BooleanArray = partitions
        .values()
        .iter()
        .zip(offsets.values())
        .map(|(p, o)| Some(committed.get(p).copied().flatten().is_none_or(|c| *o > c)))
        .collect();
    Ok(filter_record_batch(rows, &mask)?)
}

/// What [`DeltaSink::new_part`] found.
pub(super) struct NewPart {
    /// What the table holds per partition of the batch (`i64::MAX`: records of a
    /// deleted topic, never written).
    pub committed: HashMap<i32, Option<i64>>,
    /// The records' ranges the table lacks (None: it holds them all).
    pub ranges: Option<BTreeMap<i32, OffsetRange>>,
    /// The offset to record per partition: the new records' last, or the consumer's
    /// position past them where the table holds less.
    pub record: BTreeMap<i32, i64>,
}

pub(super) fn to_record(
    ranges: Option<&BTreeMap<i32, OffsetRange>>,
    through: &BTreeMap<i32, i64>,
    committed: &HashMap<i32, Option<i64>>,
) -> BTreeMap<i32, i64> {
    let mut record: BTreeMap<i32, i64> = ranges
        .into_iter()
        .flatten()
        .map(|(&p, r)| (p, r.last))
        .collect();
    for (&p, &last) in through {
        let held = committed.get(&p).copied().flatten();
        if held.is_none_or(|h| h < last) && record.get(&p).is_none_or(|&r| r < last) {
            record.insert(p, last);
        }
    }
    record
}

/// The rows of `batch` the table does not hold yet (all of them unless another writer
/// or an earlier attempt committed part of it).
pub(super) fn rows_beyond(
    rows: &RecordBatch,
    batch: &BatchInfo,
    new_ranges: &BTreeMap<i32, OffsetRange>,
    committed: &HashMap<i32, Option<i64>>,
) -> Result<RecordBatch, DeltaTableError> {
    match *new_ranges == batch.ranges {
        true => Ok(rows.clone()),
        false => drop_committed(rows, committed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: i64, last: i64) -> OffsetRange {
        OffsetRange { first, last }
    }

    #[test]
    fn new_ranges_skip_what_the_table_holds() {
        let ranges = BTreeMap::from([(0, r(10, 19)), (1, r(5, 9)), (2, r(0, 3))]);
        let committed = HashMap::from([(0, Some(14)), (1, Some(9)), (2, None)]);
        let new = new_ranges(&ranges, &committed).unwrap();
        assert_eq!(new, BTreeMap::from([(0, r(15, 19)), (2, r(0, 3))]));
        let all = HashMap::from([(0, Some(30)), (1, Some(9)), (2, Some(3))]);
        assert_eq!(new_ranges(&ranges, &all), None);
    }
}
