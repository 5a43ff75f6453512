//! `lakestream checkpoint`: a checkpoint and log cleanup on demand (writers make their
//! own after commits, see `sink::checkpoint`).

use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use serde::Serialize;

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

/// Checkpoint `table` at its loaded version and clean up the log behind it (see
/// `sink::checkpoint`), timed for the command's report.
pub async fn checkpoint(
    table: &DeltaTable,
    name: &str,
    log_retention: Duration,
) -> Result<CheckpointReport, MaintenanceError> {
    let started = Instant::now();
    let (version, logs_removed) = crate::sink::checkpoint(table, log_retention)
        .await
        .map_err(|e| MaintenanceError::delta(name, e))?;
    Ok(CheckpointReport {
        table: name.to_string(),
        version,
        logs_removed,
        seconds: started.elapsed().as_secs_f64(),
    })
}
