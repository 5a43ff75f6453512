//! Grains: counts of an append table's rows per minute, hour and day (the day in the
//! source's zone), by some columns, kept by the sync as MySQL tables `<name>_minute`,
//! `<name>_hour` and `<name>_day`. A dashboard's `$__timeFilter` then reads one index
//! range of pre-rolled rows instead of grouping raw rows on every refresh.
//!
//! Each sync recomputes, from the Delta table at the version it mirrors, every hour the
//! new commits touched (a late record's old hour too) and then the days holding those
//! hours, and writes them together with that version in one transaction. Counts are
//! absolute, never increments, so a sync redone after a crash writes the same rows and
//! a compaction (which re-adds rows it only moved) costs a recount, never a double one.
//! Days sum whole UTC hours: exact in zones whose offsets are whole hours.

use std::collections::BTreeSet;

use deltalake::arrow::array::{AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use deltalake::datafusion::common::{Column, ScalarValue};
use deltalake::datafusion::functions::expr_fn::date_trunc;
use deltalake::datafusion::functions_aggregate::expr_fn::{count, max, min};
use deltalake::datafusion::logical_expr::{lit, Expr};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::{DeltaTable, DeltaTableError};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::changes;
use super::grain_write::Write;
use super::layout::{ident, STATE_TABLE};
use super::mysql::{self, run, Mirrored};
use super::task::TableSync;
use super::types::{datetime_value, mysql_type, ValueError};
use super::SyncError;
use crate::config::{GrainPlan, OutputMode};

const HOUR: i64 = 3_600_000_000;
const WEEK: i64 = 7 * 24 * HOUR;
/// Past this many separate runs of touched hours (a backfill touches hours all over),
/// the one range from the first to the last is recounted instead.
const MAX_RANGES: usize = 64;
const GRAINS: [&str; 3] = ["minute", "hour", "day"];
pub(super) const PERIOD: &str = "period_utc";
pub(super) const DATE_KEY: &str = "date_key";

/// Half-open ranges of instants (µs), each a whole number of hours.
type Ranges = Vec<(i64, i64)>;

/// Bring `g`'s three tables up to `table`'s version.
pub(super) async fn sync(
    conn: &mut Conn,
    table: &DeltaTable,
    g: &GrainPlan,
    batch_rows: usize,
) -> Result<TableSync, SyncError> {
    let delta_err = |e| SyncError::delta(&g.table, e);
    let mut done = TableSync::new(&g.name);
    let Some(version) = table.version() else {
        return Ok(done);
    };
    let snapshot = table.snapshot().map_err(delta_err)?;
    let by_types = by_types(g, &snapshot.snapshot().arrow_schema())?;
    let table_id = snapshot.metadata().id().to_string();
    let created = ensure_tables(conn, g, &by_types).await?;
    let state = match created {
        true => None,
        false => mysql::mirrored(conn, &g.name).await?,
    };
    // A table rebuilt under the same name shares nothing with the counts: recount.
    let rebuilt = state
        .as_ref()
        .is_some_and(|s| s.rebuilt(&table_id, version));
    let from = state.as_ref().map(|s| s.version);
    done.version = Some(version);
    if from == Some(version) && !rebuilt {
        return Ok(done);
    }
    // The hours the commits since the counted version touched; None: recount all.
    let touched = match from.filter(|&f| !rebuilt && f < version) {
        Some(f) => touched(table, f, version, &g.time)
            .await
            .map_err(delta_err)?,
        None => None,
    };
    let full = touched.is_none();
    let ranges = match touched {
        Some(hours) => ranges(hours),
        None => extent(table, g).await.map_err(delta_err)?,
    };
    let fresh = super::freshness::Freshness::read(table, version, OutputMode::Append, None)
        .await
        .map_err(delta_err)?;
    let mut tx = mysql::begin_at(conn, &g.name, from).await?;
    if full {
        for grain in GRAINS {
            let sql = format!("DELETE FROM {}", ident(&format!("{}_{grain}", g.name))?);
            tx.query_drop(&sql)
                .await
                .map_err(|e| SyncError::mysql(&sql, e))?;
        }
    }
    let mut written = 0;
    for piece in pieces(&ranges) {
        let minutes = counts(table, g, "minute", &piece)
            .await
            .map_err(delta_err)?;
        let hours = counts(table, g, "hour", &piece).await.map_err(delta_err)?;
        let write = Write {
            g,
            ranges: &piece,
            stamp: fresh.stamp,
            batch_rows,
        };
        written += write.periods(&mut tx, "minute", &minutes).await?;
        written += write.periods(&mut tx, "hour", &hours).await?;
        written += write.days(&mut tx).await?;
    }
    let to = Mirrored {
        version,
        table_id: Some(table_id),
    };
    record(&mut tx, g, &to, written, fresh.stamp).await?;
    tx.commit()
        .await
        .map_err(|e| SyncError::mysql("COMMIT", e))?;
    done.rows = written;
    done.replaced = full;
    Ok(done)
}

/// The grain's state row: the version counted, and that version's commit time.
async fn record(
    tx: &mut mysql_async::Transaction<'_>,
    g: &GrainPlan,
    to: &Mirrored,
    written: u64,
    stamp: super::refresh::Stamp,
) -> Result<(), SyncError> {
    mysql::save_state(tx, &g.name, to, written).await?;
    let sql = format!(
        "UPDATE {STATE_TABLE} SET delta_committed_at = ?, output_mode = 'append', \
         period_column = ? WHERE table_name = ?"
    );
    let committed =
        datetime_value(stamp.committed_at.timestamp_micros()).map_err(|e| value_error(g, e))?;
    tx.exec_drop(&sql, (committed, g.time.as_str(), g.name.as_str()))
        .await
        .map_err(|e| SyncError::mysql(&sql, e))
}

pub(super) fn value_error(g: &GrainPlan, e: ValueError) -> SyncError {
    SyncError::Setup {
        message: format!("grain '{}': {e}", g.name),
    }
}

/// The MySQL types of the `by` columns; the time column must be a timestamp.
fn by_types(
    g: &GrainPlan,
    schema: &deltalake::arrow::datatypes::Schema,
) -> Result<Vec<String>, SyncError> {
    let field = |c: &str| {
        schema.field_with_name(c).map_err(|_| SyncError::Setup {
            message: format!(
                "mysql.grains.{}: table '{}' has no column '{c}'",
                g.name, g.table
            ),
        })
    };
    if !matches!(field(&g.time)?.data_type(), DataType::Timestamp(_, _)) {
        return Err(SyncError::Setup {
            message: format!(
                "mysql.grains.{}.time: column '{}' of table '{}' is not a timestamp",
                g.name, g.time, g.table
            ),
        });
    }
    g.by.iter()
        .map(|c| {
            let t = field(c)?.data_type().clone();
            mysql_type(&t, None).ok_or_else(|| SyncError::Setup {
                message: format!(
                    "mysql.grains.{}.by: column '{c}' has type {t} that MySQL cannot store",
                    g.name
                ),
            })
        })
        .collect()
}

/// The columns of each grain table, in order.
pub(super) fn column_names(g: &GrainPlan) -> Vec<String> {
    let mut names = vec![PERIOD.to_string(), DATE_KEY.to_string()];
    names.extend(g.by.iter().cloned());
    names.push(g.count.clone());
    names.extend(["lake_version".to_string(), "updated_at".to_string()]);
    names
}

/// Create the grain tables that are missing (true: one was, and the counts start over);
/// an existing one must have the grain's columns.
async fn ensure_tables(
    conn: &mut Conn,
    g: &GrainPlan,
    by_types: &[String],
) -> Result<bool, SyncError> {
    let collation = mysql::no_pad_collation(conn).await?;
    let wanted = column_names(g);
    let sql = "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION";
    let mut created = false;
    for grain in GRAINS {
        let name = format!("{}_{grain}", g.name);
        let existing: Vec<String> = conn
            .exec(sql, (name.as_str(),))
            .await
            .map_err(|e| SyncError::mysql(sql, e))?;
        if existing == wanted {
            continue;
        }
        if !existing.is_empty() {
            return Err(SyncError::Setup {
                message: format!(
                    "MySQL table '{name}' has columns {existing:?} but grain '{}' has {wanted:?}: \
                     drop it (DROP TABLE `{name}`) and the sync recreates and refills it",
                    g.name
                ),
            });
        }
        let mut lines = vec![
            format!("{PERIOD} DATETIME(6) NOT NULL"),
            format!("{DATE_KEY} INT NOT NULL"),
        ];
        for (c, t) in g.by.iter().zip(by_types) {
            lines.push(format!("{} {t} NULL", ident(c)?));
        }
        lines.push(format!("{} BIGINT NOT NULL", ident(&g.count)?));
        lines.push("lake_version BIGINT NOT NULL".into());
        lines.push("updated_at DATETIME(6) NOT NULL".into());
        // Each index ends with the change column: a refresh partition's MAX(updated_at)
        // is answered from the index alone.
        lines.push(format!("KEY grain_period ({PERIOD}, updated_at)"));
        lines.push(format!("KEY grain_date_key ({DATE_KEY}, updated_at)"));
        let ddl = format!(
            "CREATE TABLE {} (\n  {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}",
            ident(&name)?,
            lines.join(",\n  ")
        );
        run(conn, &ddl).await?;
        created = true;
    }
    if created {
        let forget = format!("DELETE FROM {STATE_TABLE} WHERE table_name = ?");
        conn.exec_drop(&forget, (g.name.as_str(),))
            .await
            .map_err(|e| SyncError::mysql(&forget, e))?;
    }
    Ok(created)
}

/// The hours (their starts, µs) of the rows the commits `from+1..=to` added, reading
/// only the time column of their files (None: a log entry is gone, recount all).
async fn touched(
    table: &DeltaTable,
    from: u64,
    to: u64,
    time: &str,
) -> Result<Option<BTreeSet<i64>>, DeltaTableError> {
    let Some(paths) = changes::added_files(table, from, to).await? else {
        return Ok(None);
    };
    let mut hours = BTreeSet::new();
    if paths.is_empty() {
        return Ok(Some(hours));
    }
    for batch in changes::scan(table, Some(paths), Some(&[time])).await? {
        let micros = cast(
            batch.column(0),
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )?;
        let micros = micros.as_primitive::<TimestampMicrosecondType>();
        hours.extend(micros.iter().flatten().map(|t| t.div_euclid(HOUR) * HOUR));
    }
    Ok(Some(hours))
}

/// The hours from the table's first row to its last, as one range (none: no rows).
async fn extent(table: &DeltaTable, g: &GrainPlan) -> Result<Ranges, DeltaTableError> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let time = Expr::Column(Column::new_unqualified(&g.time));
    let df = ctx
        .read_table(table.table_provider().await?)?
        .aggregate(vec![], vec![min(time.clone()), max(time)])?;
    let mut bounds = Vec::new();
    for batch in df.collect().await? {
        for i in 0..2 {
            let c = cast(
                batch.column(i),
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )?;
            let c = c.as_primitive::<TimestampMicrosecondType>();
            bounds.extend(c.iter().flatten());
        }
    }
    Ok(match bounds[..] {
        [first, last] => vec![(
            first.div_euclid(HOUR) * HOUR,
            last.div_euclid(HOUR) * HOUR + HOUR,
        )],
        _ => Vec::new(),
    })
}

/// `ranges` in pieces of at most a week each (a longer range is cut): each piece is
/// counted and written in turn, so memory follows a week of counts, not the table.
fn pieces(ranges: &[(i64, i64)]) -> Vec<Ranges> {
    let mut out: Vec<Ranges> = Vec::new();
    for &(lo, hi) in ranges {
        let mut start = lo;
        while start < hi {
            let end = hi.min(start + WEEK);
            match out.last_mut() {
                Some(piece) if end - piece[0].0 <= WEEK => piece.push((start, end)),
                _ => out.push(vec![(start, end)]),
            }
            start = end;
        }
    }
    out
}

/// Runs of consecutive hours as ranges; too many become one.
fn ranges(hours: BTreeSet<i64>) -> Ranges {
    let mut out: Ranges = Vec::new();
    for h in hours {
        match out.last_mut() {
            Some((_, end)) if *end == h => *end = h + HOUR,
            _ => out.push((h, h + HOUR)),
        }
    }
    if out.len() > MAX_RANGES {
        let (first, last) = (out[0].0, out[out.len() - 1].1);
        out = vec![(first, last)];
    }
    out
}

/// Rows per `unit` ("minute" or "hour") and `by` value within `ranges`,
/// as columns period, the `by` columns, n.
async fn counts(
    table: &DeltaTable,
    g: &GrainPlan,
    unit: &str,
    ranges: &[(i64, i64)],
) -> Result<Vec<RecordBatch>, DeltaTableError> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    let mut df = ctx.read_table(provider)?;
    let time = Expr::Column(Column::new_unqualified(&g.time));
    let tz = match df
        .schema()
        .field_with_unqualified_name(&g.time)?
        .data_type()
    {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let at = |us: i64| lit(ScalarValue::TimestampMicrosecond(Some(us), tz.clone()));
    let filter = ranges
        .iter()
        .map(|&(lo, hi)| time.clone().gt_eq(at(lo)).and(time.clone().lt(at(hi))))
        .reduce(Expr::or)
        .unwrap_or(lit(false));
    df = df.filter(filter)?;
    let mut group = vec![date_trunc(lit(unit), time).alias(PERIOD)];
    group.extend(
        g.by.iter()
            .map(|b| Expr::Column(Column::new_unqualified(b))),
    );
    let df = df.aggregate(group, vec![count(lit(1)).alias("n")])?;
    Ok(df.collect().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_hours_are_one_range_and_too_many_runs_one_span() {
        let hours: BTreeSet<i64> = [0, 1, 2, 5, 7, 8].iter().map(|h| h * HOUR).collect();
        assert_eq!(
            ranges(hours),
            vec![(0, 3 * HOUR), (5 * HOUR, 6 * HOUR), (7 * HOUR, 9 * HOUR)]
        );
        let scattered: BTreeSet<i64> = (0..200).map(|h| h * 2 * HOUR).collect();
        assert_eq!(ranges(scattered), vec![(0, 399 * HOUR)]);
    }

    #[test]
    fn long_ranges_are_cut_into_weeks_and_short_ones_share_a_piece() {
        let day = 24 * HOUR;
        let pieces = pieces(&[(0, HOUR), (2 * HOUR, 3 * HOUR), (day, 20 * day)]);
        assert_eq!(
            pieces,
            vec![
                vec![(0, HOUR), (2 * HOUR, 3 * HOUR)],
                vec![(day, 8 * day)],
                vec![(8 * day, 15 * day)],
                vec![(15 * day, 20 * day)],
            ]
        );
    }
}
