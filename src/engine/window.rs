//! Event-time windows as table functions, so a window reads like a table in SQL:
//!
//! ```sql
//! SELECT window_start, window_end, count(*) FROM hop(police_calls, call_date_time, '10 minutes', '5 minutes') GROUP BY 1, 2
//! SELECT window_start, window_end, count(*) FROM tumble(police_calls, call_date_time, '1 hour') GROUP BY 1, 2
//! ```
//!
//! Each input row comes out once per window it falls in, with `window_start` and
//! `window_end` appended (windows aligned to the Unix epoch, as in Spark). Windows that
//! already closed (end at or before the watermark) are left out: a row whose windows all
//! closed is late, dropped and counted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deltalake::arrow::array::{
    Array, AsArray, RecordBatch, TimestampMicrosecondArray, UInt32Array,
};
use deltalake::arrow::compute::take;
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};
use deltalake::datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use deltalake::datafusion::common::{plan_err, Result, ScalarValue};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::logical_expr::Expr;

/// What the window functions read for the batch being planned.
#[derive(Debug, Default)]
pub(super) struct WindowInput {
    /// Name of the stream table (the source), the only table a window can read.
    pub table: String,
    pub batch: Option<RecordBatch>,
    /// Windows ending at or before this (µs) are closed.
    pub watermark: Option<i64>,
    /// Rows dropped because every window they belong to was closed.
    pub late_rows: u64,
}

pub(super) type WindowSlot = Arc<Mutex<WindowInput>>;

/// `hop(table, column, size, slide)` or, with `tumbling`, `tumble(table, column, size)`.
#[derive(Debug)]
pub(super) struct WindowFunction {
    pub tumbling: bool,
    pub slot: WindowSlot,
}

/// Window length and step in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WindowSpec {
    pub size: i64,
    pub slide: i64,
}

impl WindowFunction {
    fn name(&self) -> &'static str {
        if self.tumbling {
            "tumble"
        } else {
            "hop"
        }
    }

    fn parse_args(&self, args: &[Expr]) -> Result<(String, String, WindowSpec)> {
        let usage = if self.tumbling {
            "tumble(<stream table>, <timestamp column>, '<size>')"
        } else {
            "hop(<stream table>, <timestamp column>, '<size>', '<slide>')"
        };
        let wanted = if self.tumbling { 3 } else { 4 };
        if args.len() != wanted {
            return plan_err!("{} takes {wanted} arguments: {usage}", self.name());
        }
        let table = name_arg(&args[0], usage)?;
        let column = name_arg(&args[1], usage)?;
        let size = duration_arg(&args[2], usage)?;
        let slide = if self.tumbling {
            size
        } else {
            duration_arg(&args[3], usage)?
        };
        if slide > size {
            return plan_err!("{}: the slide must not exceed the window size", self.name());
        }
        Ok((table, column, WindowSpec { size, slide }))
    }
}

impl TableFunctionImpl for WindowFunction {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> Result<Arc<dyn TableProvider>> {
        let (table, column, spec) = self.parse_args(args.exprs())?;
        let mut input = self.slot.lock().map_err(|_| {
            deltalake::datafusion::error::DataFusionError::Internal("window slot poisoned".into())
        })?;
        if table != input.table {
            return plan_err!(
                "{}() windows the stream table '{}', not '{table}'",
                self.name(),
                input.table
            );
        }
        let Some(batch) = input.batch.clone() else {
            return plan_err!("{}(): no batch to window", self.name());
        };
        let (out, late) = explode(&batch, &column, spec, input.watermark)?;
        input.late_rows += late;
        Ok(Arc::new(MemTable::try_new(out.schema(), vec![vec![out]])?))
    }
}

fn name_arg(e: &Expr, usage: &str) -> Result<String> {
    match e {
        Expr::Column(c) => Ok(c.name.clone()),
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => Ok(s.clone()),
        other => plan_err!("expected a name, got {other}: {usage}"),
    }
}

fn duration_arg(e: &Expr, usage: &str) -> Result<i64> {
    let micros = match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => humantime::parse_duration(s)
            .map(|d| d.as_micros() as i64)
            .or_else(|e| plan_err!("bad duration '{s}' ({e}): {usage}"))?,
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(i)), _) if i.months == 0 => {
            i64::from(i.days) * 86_400_000_000 + i.nanoseconds / 1000
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(i)), _) => {
            i64::from(i.days) * 86_400_000_000 + i64::from(i.milliseconds) * 1000
        }
        other => {
            return plan_err!("expected a duration such as '10 minutes', got {other}: {usage}")
        }
    };
    if micros <= 0 {
        return plan_err!("window durations must be positive: {usage}");
    }
    Ok(micros)
}

/// Start of every window of `spec` that contains `t` (µs), latest first.
pub(super) fn window_starts(t: i64, spec: WindowSpec) -> impl Iterator<Item = i64> {
    let last = t.div_euclid(spec.slide) * spec.slide;
    (0..)
        .map(move |k| last - k * spec.slide)
        .take_while(move |s| s + spec.size > t)
}

/// One output row per (row, open window); also returns the number of late rows.
fn explode(
    batch: &RecordBatch,
    column: &str,
    spec: WindowSpec,
    watermark: Option<i64>,
) -> Result<(RecordBatch, u64)> {
    let Some(times) = batch.column_by_name(column) else {
        return plan_err!("the stream has no column '{column}' to window on");
    };
    let DataType::Timestamp(TimeUnit::Microsecond, _) = times.data_type() else {
        return plan_err!(
            "column '{column}' is {}, not a timestamp",
            times.data_type()
        );
    };
    let times = times.as_primitive::<TimestampMicrosecondType>();
    let mut indices = Vec::with_capacity(batch.num_rows() * 2);
    let mut starts = Vec::with_capacity(batch.num_rows() * 2);
    let mut late = 0;
    for (i, t) in times.iter().enumerate() {
        let Some(t) = t else { continue };
        let mut open = 0;
        let mut any = false;
        for s in window_starts(t, spec) {
            any = true;
            if watermark.is_some_and(|w| s + spec.size <= w) {
                continue;
            }
            open += 1;
            indices.push(i as u32);
            starts.push(s);
        }
        if any && open == 0 {
            late += 1;
        }
    }
    let indices = UInt32Array::from(indices);
    let mut columns = batch
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let tz = Some("UTC".into());
    let ends: Vec<i64> = starts.iter().map(|s| s + spec.size).collect();
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(starts).with_timezone_opt(tz.clone()),
    ));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(ends).with_timezone_opt(tz.clone()),
    ));
    let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
    let ts = DataType::Timestamp(TimeUnit::Microsecond, tz);
    fields.push(Arc::new(Field::new("window_start", ts.clone(), false)));
    fields.push(Arc::new(Field::new("window_end", ts, false)));
    let out = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    Ok((out, late))
}

/// `d` in microseconds (saturating).
pub fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    #[test]
    fn hop_windows_cover_each_instant_twice() {
        let spec = WindowSpec {
            size: 10 * MIN,
            slide: 5 * MIN,
        };
        let starts: Vec<i64> = window_starts(12 * MIN, spec).collect();
        assert_eq!(starts, vec![10 * MIN, 5 * MIN]);
        // On a boundary the row belongs to the window starting there, not the one ending.
        let starts: Vec<i64> = window_starts(10 * MIN, spec).collect();
        assert_eq!(starts, vec![10 * MIN, 5 * MIN]);
        let tumble = WindowSpec {
            size: 60 * MIN,
            slide: 60 * MIN,
        };
        assert_eq!(
            window_starts(-1, tumble).collect::<Vec<_>>(),
            vec![-60 * MIN]
        );
    }

    #[test]
    fn closed_windows_are_dropped_and_fully_late_rows_counted() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )]));
        let t =
            TimestampMicrosecondArray::from(vec![2 * MIN, 7 * MIN, 20 * MIN]).with_timezone("UTC");
        let batch = RecordBatch::try_new(schema, vec![Arc::new(t)]).unwrap();
        let spec = WindowSpec {
            size: 10 * MIN,
            slide: 5 * MIN,
        };
        // Watermark at 10 min: windows [-5,5) and [0,10) are closed.
        let (out, late) = explode(&batch, "t", spec, Some(10 * MIN)).unwrap();
        assert_eq!(late, 1, "the row at 2 min only belongs to closed windows");
        // 7 min -> [5,15) only; 20 min -> [20,30) and [15,25).
        assert_eq!(out.num_rows(), 3);
    }
}
