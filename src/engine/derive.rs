//! Derived partition columns: `partition_by = ["date(call_date_time)"]` partitions a
//! table by a column computed from a TIMESTAMP field, the day in the source's time zone
//! (UTC without one), named `<field>_date` (or as given: `"day = date(call_date_time)"`).
//! It is an ordinary column of the table, filled by lakestream on every write: delta-rs
//! writes Delta generated columns only through its DataFusion write path, not the
//! per-file writer the exactly-once commit uses.

use std::sync::Arc;

use chrono::TimeZone;
use deltalake::arrow::array::{ArrayRef, AsArray, Date32Array, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};
use deltalake::arrow::error::ArrowError;

use crate::config::Derived;

/// The derived columns of one pipeline and the zone their days are in.
#[derive(Debug, Clone, Default)]
pub struct Derive {
    columns: Vec<Derived>,
    zone: Option<chrono_tz::Tz>,
}

impl Derive {
    pub fn new(columns: Vec<Derived>, zone: Option<chrono_tz::Tz>) -> Self {
        Self { columns, zone }
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// `schema` with the derived columns after its own (NOT NULL: partition values).
    pub fn schema(&self, schema: &SchemaRef) -> SchemaRef {
        if self.columns.is_empty() {
            return schema.clone();
        }
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        for d in &self.columns {
            let nullable = schema
                .field_with_name(&d.from)
                .map_or(true, |f| f.is_nullable());
            fields.push(Field::new(&d.name, DataType::Date32, nullable));
        }
        Arc::new(Schema::new(fields))
    }

    /// `rows` with the derived columns appended.
    pub fn apply(&self, rows: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        if self.columns.is_empty() {
            return Ok(rows.clone());
        }
        let schema = self.schema(&rows.schema());
        let mut columns = rows.columns().to_vec();
        for d in &self.columns {
            let from = rows
                .column_by_name(&d.from)
                .ok_or_else(|| ArrowError::SchemaError(format!("no column '{}'", d.from)))?;
            columns.push(self.days(from)?);
        }
        RecordBatch::try_new(schema, columns)
    }

    /// The day of each instant, in the zone.
    fn days(&self, column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
        let micros = column
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| ArrowError::SchemaError("date() takes a TIMESTAMP field".into()))?;
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        let days: Date32Array = micros
            .iter()
            .map(|v| {
                let at = chrono::DateTime::from_timestamp_micros(v?)?;
                let day = match self.zone {
                    Some(zone) => zone.from_utc_datetime(&at.naive_utc()).date_naive(),
                    None => at.date_naive(),
                };
                i32::try_from((day - epoch).num_days()).ok()
            })
            .collect();
        Ok(Arc::new(days))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::TimestampMicrosecondArray;

    #[test]
    fn days_are_local_and_names_follow_the_entry() {
        assert_eq!(
            Derived::parse("date(call_date_time)").unwrap().unwrap(),
            Derived {
                name: "call_date_time_date".into(),
                from: "call_date_time".into()
            }
        );
        assert_eq!(
            Derived::parse(" day = date( at ) ").unwrap().unwrap().name,
            "day"
        );
        assert!(Derived::parse("call_date").is_none());
        assert!(Derived::parse("date(a b)").unwrap().is_err());

        // 2024-11-03T06:30Z is Nov 2 in Los Angeles, Nov 3 in UTC.
        let at = 1_730_615_400_000_000i64;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "at",
            DataType::Timestamp(
                deltalake::arrow::datatypes::TimeUnit::Microsecond,
                Some("UTC".into()),
            ),
            false,
        )]));
        let rows = RecordBatch::try_new(
            schema,
            vec![Arc::new(
                TimestampMicrosecondArray::from(vec![at]).with_timezone("UTC"),
            )],
        )
        .unwrap();
        let column = vec![Derived {
            name: "day".into(),
            from: "at".into(),
        }];
        let la: chrono_tz::Tz = "America/Los_Angeles".parse().unwrap();
        for (zone, want) in [(Some(la), "2024-11-02"), (None, "2024-11-03")] {
            let out = Derive::new(column.clone(), zone).apply(&rows).unwrap();
            let day = deltalake::arrow::compute::cast(out.column(1), &DataType::Utf8).unwrap();
            assert_eq!(day.as_string::<i32>().value(0), want);
        }
    }
}
