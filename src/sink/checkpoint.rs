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
    // Every member of a group crosses the same multiple (their commits interleave): the
    // first to get there writes the checkpoint, the others see it and skip a full log
    // replay of their own.
    let multiple = version / interval * interval;
    if last_checkpoint(table).await.is_some_and(|v| v >= multiple) {
        debug!(table = %name, version, "checkpoint already written by another writer");
        return;
    }
    match checkpoint(table, log_retention).await {
        Ok((_, logs_removed)) => {
            debug!(table = %name, version, logs_removed, "checkpoint written")
        }
        Err(e) => {
            warn!(table = %name, version, error = %crate::report::Report(&e), "checkpoint failed; the next one will cover it")
        }
    }
}

/// The version `_delta_log/_last_checkpoint` names (None: no checkpoint, or unreadable).
async fn last_checkpoint(table: &DeltaTable) -> Option<u64> {
    use deltalake::logstore::object_store::ObjectStoreExt as _;
    let path = deltalake::Path::from("_delta_log/_last_checkpoint");
    let bytes = table
        .object_store()
        .get(&path)
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["version"].as_u64()
}
