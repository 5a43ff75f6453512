//! Checkpoints and log cleanup: a table read after thousands of micro-batch commits
//! opens from one Parquet checkpoint plus the few JSON entries after it. Writers
//! checkpoint after their own commits (`after_commit`); `lakestream checkpoint` and the
//! maintenance schedules call [`checkpoint`] directly.

use std::time::Duration;

use deltalake::protocol::checkpoints::{cleanup_expired_logs_for, create_checkpoint};
use deltalake::{DeltaTable, DeltaTableError};
use tracing::{debug, warn};

/// Checkpoint `table` at its loaded version, then drop log entries older than
/// `log_retention` that the checkpoint makes unnecessary. Returns the version and the
/// log entries removed.
pub async fn checkpoint(
    table: &DeltaTable,
    log_retention: Duration,
) -> Result<(u64, usize), DeltaTableError> {
    let version = table.version().ok_or(DeltaTableError::NotInitialized)?;
    create_checkpoint(table, None).await?;
    let cutoff = chrono::Utc::now().timestamp_millis() - log_retention.as_millis() as i64;
    let removed =
        cleanup_expired_logs_for(version, table.log_store().as_ref(), cutoff, None).await?;
    Ok((version, removed))
}

/// Called by a writer after its commit: checkpoint when the versions since the writer's
/// `previous` commit crossed a multiple of `interval` (other writers' commits, such as
/// compaction, may have taken the multiple itself). Best effort: the commit has landed,
/// a missing checkpoint only makes opening slower, and the next one covers everything.
pub(super) async fn after_commit(
    table: &DeltaTable,
    name: &str,
    previous: Option<u64>,
    interval: u64,
    log_retention: Duration,
) {
    let Some(version) = table.version() else {
        return;
    };
    let previous = previous.unwrap_or(version.saturating_sub(1));
    if interval == 0 || version / interval <= previous / interval {
        return;
    }
    match checkpoint(table, log_retention).await {
        Ok((_, logs_removed)) => {
            debug!(table = %name, version, logs_removed, "checkpoint written")
        }
        Err(e) => {
            warn!(table = %name, version, error = %e, "checkpoint failed; the next one will cover it")
        }
    }
}
