//! Refresh-ready facts: the columns the sync adds to every mirrored table so that a BI
//! tool's incremental refresh reads only the periods that changed. Power BI's
//! incremental refresh filters on a DateTime column (`RangeStart`/`RangeEnd`) or a
//! `yyyymmdd` integer, and its "detect data changes" asks each partition for the
//! maximum of a change column: each of those must be one index range scan.
//!
//! - `_lake_period` (`DATETIME(6)`, UTC): the row's event-time period, the value of the
//!   table's period column (its first timestamp key, else its first timestamp column);
//!   a table without one (or a row where it is NULL) gets the commit time of the Delta
//!   version that wrote the row, so no row ever falls outside every refresh range.
//! - `_lake_date_key` (`INT`, yyyymmdd): the period's day in the source's zone.
//! - `_lake_version` / `_lake_updated_at`: the Delta version whose sync last wrote the
//!   row, and that version's commit time (UTC): a partition whose maximum moved changed.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use chrono_tz::Tz;
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Schema, TimeUnit, TimestampMicrosecondType};
use mysql_async::Value;

use super::types::{datetime_value, ValueError};

pub(super) const PERIOD: &str = "_lake_period";
pub(super) const DATE_KEY: &str = "_lake_date_key";
pub(super) const VERSION: &str = "_lake_version";
pub(super) const UPDATED_AT: &str = "_lake_updated_at";
/// The refresh columns, in table order (after the data columns and the hidden key).
pub(super) const COLUMNS: [&str; 4] = [PERIOD, DATE_KEY, VERSION, UPDATED_AT];

/// How one table's refresh columns are filled.
#[derive(Debug, Clone)]
pub(super) struct Refresh {
    /// The timestamp column holding a row's period (None: the commit time).
    pub period: Option<String>,
    /// The zone `_lake_date_key` counts days in.
    pub zone: Tz,
}

/// The Delta version a sync writes, and when it was committed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stamp {
    pub version: u64,
    pub committed_at: DateTime<Utc>,
}

impl Refresh {
    pub(super) fn new(schema: &Schema, keys: &[String], zone: Tz) -> Self {
        let is_time = |name: &str| {
            schema
                .field_with_name(name)
                .is_ok_and(|f| matches!(f.data_type(), DataType::Timestamp(_, _)))
        };
        let period = keys.iter().find(|k| is_time(k)).cloned().or_else(|| {
            schema
                .fields()
                .iter()
                .find(|f| matches!(f.data_type(), DataType::Timestamp(_, _)))
                .map(|f| f.name().clone())
        });
        Self { period, zone }
    }

    /// Column definitions and indexes. Each index ends with the change column, so the
    /// per-partition `MAX(_lake_updated_at)` is answered from the index alone.
    pub(super) fn ddl_lines() -> Vec<String> {
        vec![
            format!("{PERIOD} DATETIME(6) NOT NULL"),
            format!("{DATE_KEY} INT NOT NULL"),
            format!("{VERSION} BIGINT NOT NULL"),
            format!("{UPDATED_AT} DATETIME(6) NOT NULL"),
            format!("KEY lake_period ({PERIOD}, {UPDATED_AT})"),
            format!("KEY lake_date_key ({DATE_KEY}, {UPDATED_AT})"),
            format!("KEY lake_updated_at ({UPDATED_AT})"),
        ]
    }

    /// The four refresh columns' values for every row of `batch`.
    pub(super) fn values(
        &self,
        batch: &RecordBatch,
        stamp: Stamp,
    ) -> Result<[Vec<Value>; 4], ValueError> {
        let rows = batch.num_rows();
        let committed = stamp.committed_at.timestamp_micros();
        let periods: Vec<i64> = match self.period.as_ref().and_then(|c| batch.column_by_name(c)) {
            Some(column) => {
                let micros = cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
                let a = micros.as_primitive::<TimestampMicrosecondType>();
                (0..rows)
                    .map(|i| if a.is_null(i) { committed } else { a.value(i) })
                    .collect()
            }
            None => vec![committed; rows],
        };
        let period = periods
            .iter()
            .map(|&p| datetime_value(p))
            .collect::<Result<_, _>>()?;
        let date_key = periods
            .iter()
            .map(|&p| self.date_key(p).map(|k| Value::Int(i64::from(k))))
            .collect::<Result<_, _>>()?;
        let version = vec![Value::Int(stamp.version as i64); rows];
        let updated = vec![datetime_value(committed)?; rows];
        Ok([period, date_key, version, updated])
    }

    fn date_key(&self, micros: i64) -> Result<i32, ValueError> {
        date_key(self.zone, micros)
    }
}

/// yyyymmdd of the instant `micros` in `zone`.
pub(super) fn date_key(zone: Tz, micros: i64) -> Result<i32, ValueError> {
    let t = DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| ValueError::Range(format!("timestamp {micros}")))?
        .with_timezone(&zone);
    Ok(t.year() * 10_000 + t.month() as i32 * 100 + t.day() as i32)
}

/// The instant (µs) day `key` (yyyymmdd) starts in `zone`: its midnight, or the first
/// hour after it where a zone moved its clocks forward at midnight.
pub(super) fn day_start(zone: Tz, key: i32) -> Result<i64, ValueError> {
    let bad = || ValueError::Range(format!("date key {key}"));
    let day =
        chrono::NaiveDate::from_ymd_opt(key / 10_000, (key / 100 % 100) as u32, (key % 100) as u32)
            .ok_or_else(bad)?;
    (0..24)
        .find_map(|h| {
            let local = day.and_hms_opt(h, 0, 0)?;
            zone.from_local_datetime(&local).earliest()
        })
        .map(|t| t.timestamp_micros())
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
    use deltalake::arrow::datatypes::Field;

    use super::*;

    #[test]
    fn the_period_is_the_first_timestamp_key_and_days_count_in_the_zone() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new(
                "seen",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            Field::new(
                "window_start",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
        ]));
        let keys = vec!["name".to_string(), "window_start".to_string()];
        let refresh = Refresh::new(&schema, &keys, chrono_tz::America::Los_Angeles);
        assert_eq!(refresh.period.as_deref(), Some("window_start"));
        // 2018-10-01 03:00 UTC is still 30 September in San Francisco.
        let t = 1_538_362_800_000_000;
        let column =
            |v: Vec<Option<i64>>| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(v)) };
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                column(vec![None, None]),
                column(vec![Some(t), None]),
            ],
        )
        .expect("batch");
        let committed_at = DateTime::from_timestamp_micros(t + 86_400_000_000).expect("t");
        let [period, day, version, updated] = refresh
            .values(
                &batch,
                Stamp {
                    version: 7,
                    committed_at,
                },
            )
            .expect("values");
        assert_eq!(period[0], Value::Date(2018, 10, 1, 3, 0, 0, 0));
        assert_eq!(day, vec![Value::Int(20180930), Value::Int(20181001)]);
        // A NULL period is the commit time: the row stays inside some refresh range.
        assert_eq!(period[1], updated[1]);
        assert_eq!(version, vec![Value::Int(7), Value::Int(7)]);
        let no_time = Schema::new(vec![Field::new("name", DataType::Utf8, false)]);
        assert!(Refresh::new(&no_time, &keys, chrono_tz::UTC)
            .period
            .is_none());
    }

    #[test]
    fn a_day_starts_at_local_midnight() {
        let la = chrono_tz::America::Los_Angeles;
        // 2018-11-04 (the autumn change) starts at 07:00 UTC, the day after at 08:00.
        assert_eq!(day_start(la, 20181104).unwrap(), 1_541_314_800_000_000);
        assert_eq!(day_start(la, 20181105).unwrap(), 1_541_404_800_000_000);
        assert_eq!(date_key(la, 1_541_404_800_000_000 - 1).unwrap(), 20181104);
    }
}
