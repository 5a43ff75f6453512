//! Stream state: the event-time clock (per-partition watermarks) and the running
//! aggregate. Both are values: a batch computes new ones from old ones, and the sink
//! installs them only once the commit that records them has landed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::kernels::cmp::{gt, lt_eq};
use deltalake::arrow::compute::{cast, concat_batches, filter_record_batch};
use deltalake::arrow::datatypes::{Int32Type, SchemaRef, TimestampMicrosecondType};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::row::{RowConverter, SortField};
use serde::{Deserialize, Serialize};

use crate::config::kafka_columns;

/// Event time per partition and the watermark derived from it. The watermark of the
/// stream is the minimum over the partitions still delivering (as in Flink), so a
/// partition that is behind does not see its on-time records turned late; it never
/// moves back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Clock {
    /// Latest event time seen, per Kafka partition (µs since the epoch, UTC).
    #[serde(rename = "maxEventTime")]
    pub max_event: BTreeMap<i32, i64>,
    /// Current watermark (µs): windows ending at or before it are closed.
    pub watermark: Option<i64>,
    /// When each partition last delivered a record to this process (or when we started).
    #[serde(skip)]
    last_seen: HashMap<i32, Instant>,
}

impl Clock {
    /// Take in the latest event time per partition of a batch (`None` for partitions
    /// that delivered nothing) and move the watermark by `delay` (µs) behind it. A
    /// partition silent for `idle` stops holding it back, unless it is in `behind`
    /// (records are waiting to be read: silence there is slowness, not idleness).
    pub fn advance(
        &mut self,
        batch_max: &BTreeMap<i32, i64>,
        partitions: &[i32],
        behind: &HashSet<i32>,
        (delay, idle): (i64, Duration),
        now: Instant,
    ) {
        for (&p, &t) in batch_max {
            let e = self.max_event.entry(p).or_insert(t);
            *e = (*e).max(t);
            self.last_seen.insert(p, now);
        }
        let mut lowest: Option<i64> = None;
        for p in partitions {
            let seen = *self.last_seen.entry(*p).or_insert(now);
            if now.duration_since(seen) >= idle && !behind.contains(p) {
                continue; // idle: stops holding the watermark back
            }
            match self.max_event.get(p) {
                Some(t) => lowest = Some(lowest.map_or(*t, |l| l.min(*t))),
                None => return, // an active partition with no event time yet: wait for it
            }
        }
        if let Some(l) = lowest {
            let candidate = l.saturating_sub(delay);
            self.watermark = Some(self.watermark.map_or(candidate, |w| w.max(candidate)));
        }
    }

    /// After loading a committed clock: every partition counts as active from now.
    pub fn restarted(mut self, now: Instant) -> Self {
        self.last_seen = self.max_event.keys().map(|p| (*p, now)).collect();
        self
    }
}

/// Latest event time per partition in `rows` (`kafka_partition` and `column`).
pub(super) fn max_event_times(
    rows: &RecordBatch,
    column: &str,
) -> Result<BTreeMap<i32, i64>, ArrowError> {
    let missing = |c: &str| ArrowError::SchemaError(format!("batch has no column {c}"));
    let parts = rows
        .column_by_name(kafka_columns::PARTITION)
        .ok_or_else(|| missing(kafka_columns::PARTITION))?
        .as_primitive::<Int32Type>();
    let times = rows
        .column_by_name(column)
        .ok_or_else(|| missing(column))?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| ArrowError::SchemaError(format!("{column} is not a timestamp")))?;
    let mut out = BTreeMap::new();
    for (p, t) in parts.values().iter().zip(times.iter()) {
        if let Some(t) = t {
            let e = out.entry(*p).or_insert(t);
            *e = (*e).max(t);
        }
    }
    Ok(out)
}

/// The running aggregate: one row per key, with the output schema.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub rows: RecordBatch,
}

impl Aggregate {
    pub fn empty(schema: SchemaRef) -> Self {
        Self {
            rows: RecordBatch::new_empty(schema),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rows of `merged` whose key also occurs in `partial` (the rows a batch changed).
pub(super) fn changed_rows(
    merged: &RecordBatch,
    partial: &RecordBatch,
    keys: &[String],
) -> Result<RecordBatch, ArrowError> {
    let key_columns = |b: &RecordBatch| -> Result<Vec<ArrayRef>, ArrowError> {
        keys.iter()
            .map(|k| {
                b.column_by_name(k)
                    .cloned()
                    .ok_or_else(|| ArrowError::SchemaError(format!("no key column {k}")))
            })
            .collect()
    };
    let fields: Vec<SortField> = key_columns(merged)?
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let partial_rows = converter.convert_columns(&key_columns(partial)?)?;
    let touched: HashSet<Vec<u8>> = partial_rows.iter().map(|r| r.as_ref().to_vec()).collect();
    let all = converter.convert_columns(&key_columns(merged)?)?;
    let mask: BooleanArray = all
        .iter()
        .map(|r| Some(touched.contains(r.as_ref())))
        .collect();
    filter_record_batch(merged, &mask)
}

/// Split `rows` by its `window_end` column: (closed: end <= watermark, open).
pub(super) fn split_closed(
    rows: &RecordBatch,
    watermark: Option<i64>,
) -> Result<(RecordBatch, RecordBatch), ArrowError> {
    let Some(w) = watermark else {
        return Ok((RecordBatch::new_empty(rows.schema()), rows.clone()));
    };
    let ends = rows
        .column_by_name("window_end")
        .ok_or_else(|| ArrowError::SchemaError("no window_end column".into()))?;
    let ends = cast(
        ends,
        &deltalake::arrow::datatypes::DataType::Timestamp(
            deltalake::arrow::datatypes::TimeUnit::Microsecond,
            None,
        ),
    )?;
    let w = TimestampMicrosecondArray::new_scalar(w);
    let closed = lt_eq(&ends, &w)?;
    let open = gt(&ends, &w)?;
    Ok((
        filter_record_batch(rows, &closed)?,
        filter_record_batch(rows, &open)?,
    ))
}

/// Cast every column to `schema` (query results may use view types or wider sums).
pub(super) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// All `batches` as one (with `schema` when there are none).
pub(super) fn concat(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<RecordBatch, ArrowError> {
    let conformed = batches
        .iter()
        .map(|b| conform(b, schema))
        .collect::<Result<Vec<_>, _>>()?;
    concat_batches(schema, &conformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    #[test]
    fn watermark_is_the_minimum_over_active_partitions_and_never_goes_back() {
        let now = Instant::now();
        let spec = (60 * MIN, Duration::from_secs(60));
        let none = HashSet::new();
        let mut c = Clock::default();
        let parts = [0, 1];
        c.advance(&BTreeMap::from([(0, 100 * MIN)]), &parts, &none, spec, now);
        assert_eq!(c.watermark, None, "partition 1 has not delivered yet");
        c.advance(&BTreeMap::from([(1, 70 * MIN)]), &parts, &none, spec, now);
        assert_eq!(c.watermark, Some(10 * MIN));
        // Partition 1 goes quiet while behind: it still holds the watermark.
        let later = now + Duration::from_secs(61);
        let behind = HashSet::from([1]);
        c.advance(
            &BTreeMap::from([(0, 130 * MIN)]),
            &parts,
            &behind,
            spec,
            later,
        );
        assert_eq!(c.watermark, Some(10 * MIN));
        // Caught up and quiet: after the idle timeout only partition 0 counts.
        c.advance(
            &BTreeMap::from([(0, 130 * MIN)]),
            &parts,
            &none,
            spec,
            later,
        );
        assert_eq!(c.watermark, Some(70 * MIN));
        // Partition 1 comes back far behind: the watermark does not go back.
        c.advance(&BTreeMap::from([(1, 75 * MIN)]), &parts, &none, spec, later);
        assert_eq!(c.watermark, Some(70 * MIN));
    }

    #[test]
    fn clock_round_trips_through_json() {
        let mut c = Clock::default();
        c.advance(
            &BTreeMap::from([(3, 5)]),
            &[3],
            &HashSet::new(),
            (1, Duration::from_secs(1)),
            Instant::now(),
        );
        let text = serde_json::to_string(&c).unwrap();
        let back: Clock = serde_json::from_str(&text).unwrap();
        assert_eq!(back.max_event, c.max_event);
        assert_eq!(back.watermark, Some(4));
    }
}
