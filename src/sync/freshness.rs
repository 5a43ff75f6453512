//! What each mirror is complete up to, and how far back a change can still reach: kept
//! in the sync state row with every mirrored version, read through two views the BI
//! account may SELECT:
//!
//! - `lake_freshness`: the Delta version mirrored, when it was committed, the event time
//!   the table is complete up to (its pipeline's watermark: the minimum over partitions
//!   of their latest event time less the allowed delay), and the lags.
//! - `lake_change_horizon`: the oldest period a change can still touch. A windowed
//!   pipeline drops records older than its watermark, so only windows ending after it
//!   can change: periods from `watermark - window length` on. A complete table is
//!   replaced whole and a CDC (upsert) delete reaches any key: any period (NULL).

use std::time::Duration;

use chrono::{DateTime, Utc};
use deltalake::kernel::Action;
use deltalake::{DeltaTable, DeltaTableError};
use mysql_async::prelude::Queryable;
use mysql_async::Value;

use super::layout::{ident, Layout, STATE_TABLE};
use super::refresh::Stamp;
use super::types::datetime_value;
use super::SyncError;
use crate::config::OutputMode;

/// The state columns this module fills (added to older state tables), with their types.
pub(super) const STATE_COLUMNS: [(&str, &str); 6] = [
    ("delta_committed_at", "DATETIME(6) NULL"),
    ("complete_through", "DATETIME(6) NULL"),
    ("changes_from", "DATETIME(6) NULL"),
    ("output_mode", "VARCHAR(16) NULL"),
    ("watermark_delay_s", "BIGINT NULL"),
    ("period_column", "VARCHAR(64) NULL"),
];

/// The views over the state, created before the `sql_dir` files (which may use them).
pub(super) const VIEWS: [&str; 2] = [
    "CREATE OR REPLACE VIEW lake_freshness AS \
     SELECT table_name, delta_version, \
            delta_committed_at AS committed_at_utc, \
            complete_through AS complete_through_utc, \
            synced_at AS synced_at_utc, \
            TIMESTAMPDIFF(SECOND, complete_through, UTC_TIMESTAMP()) AS lag_s, \
            TIMESTAMPDIFF(SECOND, delta_committed_at, UTC_TIMESTAMP()) AS commit_age_s, \
            TIMESTAMPDIFF(SECOND, delta_committed_at, synced_at) AS sync_delay_s \
     FROM lakestream_sync_state",
    "CREATE OR REPLACE VIEW lake_change_horizon AS \
     SELECT table_name, output_mode, period_column, watermark_delay_s, \
            complete_through AS watermark_utc, \
            changes_from AS changes_from_utc, \
            CASE WHEN changes_from IS NULL THEN NULL \
                 ELSE DATEDIFF(UTC_TIMESTAMP(), changes_from) + 1 END AS refresh_last_days, \
            CASE WHEN changes_from IS NOT NULL \
                   THEN 'periods from changes_from_utc on can still change; older ones are final' \
                 WHEN output_mode = 'complete' \
                   THEN 'every batch replaces the whole table: any period can change' \
                 WHEN output_mode = 'upsert' \
                   THEN 'a CDC update or delete can reach any key: any period can change' \
                 ELSE 'no watermark bounds late records: any period can change' END AS reach \
     FROM lakestream_sync_state",
];

/// What a mirrored version says of its table's freshness.
#[derive(Debug, Clone)]
pub(super) struct Freshness {
    pub stamp: Stamp,
    pub mode: OutputMode,
    pub watermark_delay: Option<Duration>,
    /// The pipeline's watermark after this version (µs), where it keeps one.
    pub watermark: Option<i64>,
}

impl Freshness {
    /// Read from `table` at its loaded `version`.
    pub(super) async fn read(
        table: &DeltaTable,
        version: u64,
        mode: OutputMode,
        watermark_delay: Option<Duration>,
    ) -> Result<Self, DeltaTableError> {
        let committed_ms = crate::sink::commit_actions(table, version)
            .await?
            .unwrap_or_default()
            .into_iter()
            .find_map(|a| match a {
                Action::CommitInfo(info) => info.timestamp,
                _ => None,
            });
        // A version whose log entry was cleaned up (behind a checkpoint) has no time
        // left but the mirror's own: now.
        let committed_at = committed_ms
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or_else(Utc::now);
        let watermark = match watermark_delay {
            Some(_) => crate::sink::latest_watermark(table).await?,
            None => None,
        };
        Ok(Self {
            stamp: Stamp {
                version,
                committed_at,
            },
            mode,
            watermark_delay,
            watermark,
        })
    }
}

/// Record `fresh` in `layout`'s state row, inside the write's transaction (after the
/// rows, so the window length is read from what the table now holds).
pub(super) async fn record(
    tx: &mut mysql_async::Transaction<'_>,
    layout: &Layout,
    fresh: &Freshness,
) -> Result<(), SyncError> {
    let windowed = matches!(fresh.mode, OutputMode::Append | OutputMode::Update);
    let changes_from = match (fresh.watermark, windowed) {
        (Some(w), true) => window_micros(tx, layout).await?.map(|len| w - len),
        _ => None,
    };
    let time = |micros: Option<i64>| -> Result<Value, SyncError> {
        match micros {
            None => Ok(Value::NULL),
            Some(m) => datetime_value(m).map_err(|e| SyncError::Setup {
                message: format!("table '{}': {e}", layout.table),
            }),
        }
    };
    let sql = format!(
        "UPDATE {STATE_TABLE} SET delta_committed_at = ?, complete_through = ?, \
         changes_from = ?, output_mode = ?, watermark_delay_s = ?, period_column = ? \
         WHERE table_name = ?"
    );
    let params = vec![
        time(Some(fresh.stamp.committed_at.timestamp_micros()))?,
        time(fresh.watermark)?,
        time(changes_from)?,
        Value::from(fresh.mode.name()),
        fresh
            .watermark_delay
            .map_or(Value::NULL, |d| Value::Int(d.as_secs() as i64)),
        Value::from(layout.refresh.period.as_deref()),
        Value::from(layout.table.as_str()),
    ];
    tx.exec_drop(&sql, params)
        .await
        .map_err(|e| SyncError::mysql(&sql, e))
}

/// The length of the table's windows (µs), from one of its rows: every window of a
/// pipeline has the same length. None: the table has no window columns, or no row yet,
/// and then no period is known to be final.
async fn window_micros(
    tx: &mut mysql_async::Transaction<'_>,
    layout: &Layout,
) -> Result<Option<i64>, SyncError> {
    let has = |c: &str| layout.schema.field_with_name(c).is_ok();
    if !(has("window_start") && has("window_end")) {
        return Ok(None);
    }
    let sql = format!(
        "SELECT TIMESTAMPDIFF(MICROSECOND, window_start, window_end) FROM {} LIMIT 1",
        ident(&layout.table)?
    );
    let len: Option<Option<i64>> = tx
        .query_first(&sql)
        .await
        .map_err(|e| SyncError::mysql(&sql, e))?;
    Ok(len.flatten())
}
