//! Checkpoints and log cleanup: a table read after thousands of micro-batch commits
//! opens from one Parquet checkpoint plus the few JSON entries after it.

use std::time::{Duration, Instant};

use deltalake::protocol::checkpoints::{cleanup_expired_logs_for, create_checkpoint};
use deltalake::{DeltaTable, DeltaTableError};
use serde::Serialize;
use tracing::{debug, warn};

use super::MaintenanceError;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointReport {
    pub table: String,
    pub version: u64,
    /// Log entries (and older checkpoints) removed behind the new checkpoint.
    pub logs_removed: usize,
    pub seconds: f64,
}

/// Checkpoint `table` at its loaded version, then drop log entries older than
/// `log_retention` that the checkpoint makes unnecessary.
pub async fn checkpoint(
    table: &DeltaTable,
    name: &str,
    log_retention: Duration,
) -> Result<CheckpointReport, MaintenanceError> {
    let started = Instant::now();
    let err = |e| MaintenanceError::delta(name, e);
    let version = table
        .version()
        .ok_or_else(|| err(DeltaTableError::NotInitialized))?;
    create_checkpoint(table, None).await.map_err(err)?;
    let cutoff = chrono::Utc::now().timestamp_millis() - log_retention.as_millis() as i64;
    let logs_removed = cleanup_expired_logs_for(version, table.log_store().as_ref(), cutoff, None)
        .await
        .map_err(err)?;
    Ok(CheckpointReport {
        table: name.to_string(),
        version,
        logs_removed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Called by a writer after its commit: checkpoint when the versions since the writer's
/// `previous` commit crossed a multiple of `interval` (other writers' commits, such as
/// compaction, may have taken the multiple itself). Best effort: the commit has landed,
/// a missing checkpoint only makes opening slower, and the next one covers everything.
pub async fn after_commit(
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
    match checkpoint(table, name, log_retention).await {
        Ok(r) => {
            debug!(table = %name, version, logs_removed = r.logs_removed, seconds = r.seconds, "checkpoint written")
        }
        Err(e) => {
            warn!(table = %name, version, error = %e, "checkpoint failed; the next one will cover it")
        }
    }
}
