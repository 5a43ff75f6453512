//! The grains' side of a sync's MySQL transaction: the recounted rows in place of the
//! old ones, keeping the change stamp of every row whose count did not change (see
//! `grains`).

use std::collections::HashMap;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Row, Transaction, Value};

use super::grains::{column_names, value_error, DATE_KEY, PERIOD};
use super::layout::ident;
use super::mysql::MAX_PLACEHOLDERS;
use super::refresh::{date_key, day_start, Stamp};
use super::types::{datetime_value, values, ValueError};
use super::SyncError;
use crate::config::GrainPlan;

/// The writes of one sync, inside its transaction.
pub(super) struct Write<'a> {
    pub g: &'a GrainPlan,
    /// The ranges recounted (whole hours).
    pub ranges: &'a [(i64, i64)],
    pub stamp: Stamp,
    pub batch_rows: usize,
}

impl Write<'_> {
    fn table(&self, grain: &str) -> Result<String, SyncError> {
        ident(&format!("{}_{grain}", self.g.name))
    }

    fn time(&self, micros: i64) -> Result<Value, SyncError> {
        datetime_value(micros).map_err(|e| value_error(self.g, e))
    }

    /// The change columns every row written now carries.
    fn stamp_values(&self) -> Result<[Value; 2], SyncError> {
        Ok([
            Value::Int(self.stamp.version as i64),
            self.time(self.stamp.committed_at.timestamp_micros())?,
        ])
    }

    /// Replace the `grain` rows of the recounted ranges with `batches`.
    pub(super) async fn periods(
        &self,
        tx: &mut Transaction<'_>,
        grain: &str,
        batches: &[RecordBatch],
    ) -> Result<u64, SyncError> {
        let filters = self
            .ranges
            .iter()
            .map(|&(lo, hi)| {
                let filter = format!(" WHERE {PERIOD} >= ? AND {PERIOD} < ?");
                Ok((filter, vec![self.time(lo)?, self.time(hi)?]))
            })
            .collect::<Result<Vec<_>, SyncError>>()?;
        let stamp = self.stamp_values()?;
        let bad = |e: ValueError| value_error(self.g, e);
        let mut rows = Vec::new();
        for batch in batches {
            let periods = batch.column(0).as_primitive::<TimestampMicrosecondType>();
            let n = batch
                .column(batch.num_columns() - 1)
                .as_primitive::<Int64Type>();
            let by: Vec<Vec<Value>> = (1..batch.num_columns() - 1)
                .map(|i| values(batch.column(i)).map_err(bad))
                .collect::<Result<_, _>>()?;
            for r in (0..batch.num_rows()).filter(|&r| !periods.is_null(r)) {
                let p = periods.value(r);
                let day = date_key(self.g.zone, p).map_err(bad)?;
                let mut row = vec![self.time(p)?, Value::Int(i64::from(day))];
                row.extend(by.iter().map(|c| c[r].clone()));
                row.push(Value::Int(n.value(r)));
                row.extend(stamp.iter().cloned());
                rows.push(row);
            }
        }
        self.replace(tx, &self.table(grain)?, &filters, rows).await
    }

    /// Replace the days holding the recounted hours with the sums of their hours.
    pub(super) async fn days(&self, tx: &mut Transaction<'_>) -> Result<u64, SyncError> {
        let bad = |e: ValueError| value_error(self.g, e);
        let mut keys: Vec<(i32, i32)> = Vec::new();
        for &(lo, hi) in self.ranges {
            let a = date_key(self.g.zone, lo).map_err(bad)?;
            let b = date_key(self.g.zone, hi - 1).map_err(bad)?;
            match keys.last_mut() {
                Some((_, end)) if a <= *end => *end = (*end).max(b),
                _ => keys.push((a, b)),
            }
        }
        let filters: Vec<(String, Vec<Value>)> = keys
            .into_iter()
            .map(|(a, b)| {
                let params = vec![Value::Int(i64::from(a)), Value::Int(i64::from(b))];
                (format!(" WHERE {DATE_KEY} BETWEEN ? AND ?"), params)
            })
            .collect();
        let group = std::iter::once(Ok(DATE_KEY.to_string()))
            .chain(self.g.by.iter().map(|b| ident(b)))
            .collect::<Result<Vec<_>, _>>()?
            .join(", ");
        let (hour, count) = (self.table("hour")?, ident(&self.g.count)?);
        let stamp = self.stamp_values()?;
        let mut rows = Vec::new();
        for (filter, params) in &filters {
            let sql = format!(
                "SELECT {group}, CAST(SUM({count}) AS SIGNED) FROM {hour}{filter} GROUP BY {group}"
            );
            let found: Vec<Row> = tx
                .exec(&sql, Params::Positional(params.clone()))
                .await
                .map_err(|e| SyncError::mysql(&sql, e))?;
            for row in found {
                let mut values = row.unwrap();
                let Some(&Value::Int(key)) = values.first() else {
                    return Err(SyncError::Setup {
                        message: format!("grain '{}': no date key in {values:?}", self.g.name),
                    });
                };
                let start = day_start(self.g.zone, key as i32).map_err(bad)?;
                values.insert(0, self.time(start)?);
                values.extend(stamp.iter().cloned());
                rows.push(values);
            }
        }
        self.replace(tx, &self.table("day")?, &filters, rows).await
    }

    /// Swap the rows of `table` under each filter for `rows`. A row whose count did
    /// not change keeps its version and time, so a partition's change marker moves
    /// only when one of its counts does (a compaction recounts, changing nothing).
    /// Returns the rows that changed.
    async fn replace(
        &self,
        tx: &mut Transaction<'_>,
        table: &str,
        filters: &[(String, Vec<Value>)],
        mut rows: Vec<Vec<Value>>,
    ) -> Result<u64, SyncError> {
        let columns = column_names(self.g)
            .iter()
            .map(|c| ident(c))
            .collect::<Result<Vec<_>, _>>()?
            .join(", ");
        let mut kept: HashMap<String, Vec<Value>> = HashMap::new();
        for (filter, params) in filters {
            let sql = format!("SELECT {columns} FROM {table}{filter}");
            let old: Vec<Row> = tx
                .exec(&sql, Params::Positional(params.clone()))
                .await
                .map_err(|e| SyncError::mysql(&sql, e))?;
            for row in old {
                let mut values = row.unwrap();
                let stamp = values.split_off(values.len().saturating_sub(2));
                kept.insert(format!("{values:?}"), stamp);
            }
            run_tx(tx, &format!("DELETE FROM {table}{filter}"), params.clone()).await?;
        }
        let mut changed = 0;
        for row in &mut rows {
            let at = row.len().saturating_sub(2);
            match kept.get(&format!("{:?}", &row[..at])) {
                Some(stamp) => {
                    row.truncate(at);
                    row.extend(stamp.iter().cloned());
                }
                None => changed += 1,
            }
        }
        self.insert(tx, table, &columns, &rows).await?;
        Ok(changed)
    }

    /// Multi-row INSERTs of `rows` (each in `column_names` order).
    async fn insert(
        &self,
        tx: &mut Transaction<'_>,
        table: &str,
        columns: &str,
        rows: &[Vec<Value>],
    ) -> Result<(), SyncError> {
        let width = column_names(self.g).len();
        let one = format!("({})", vec!["?"; width].join(", "));
        let chunk = self.batch_rows.min(MAX_PLACEHOLDERS / width).max(1);
        for part in rows.chunks(chunk) {
            let sql = format!(
                "INSERT INTO {table} ({columns}) VALUES {}",
                vec![one.as_str(); part.len()].join(", ")
            );
            run_tx(tx, &sql, part.concat()).await?;
        }
        Ok(())
    }
}

async fn run_tx(tx: &mut Transaction<'_>, sql: &str, params: Vec<Value>) -> Result<(), SyncError> {
    tx.exec_drop(sql, Params::Positional(params))
        .await
        .map_err(|e| SyncError::mysql(sql, e))
}
