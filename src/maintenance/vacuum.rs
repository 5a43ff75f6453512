//! Vacuum: delete data files no version within the retention needs, including files a
//! crashed writer left behind without committing them.

use std::time::{Duration, Instant};

use deltalake::operations::vacuum::VacuumMode;
use deltalake::{DeltaTable, DeltaTableError};
use serde::Serialize;

use super::{retrying, MaintenanceError};
use crate::storage::Storage;

#[derive(Debug, Clone)]
pub struct VacuumOptions {
    pub retention: Duration,
    pub min_retention: Duration,
    /// Allow a retention below `min_retention`.
    pub force: bool,
    /// List what would be deleted, delete nothing.
    pub dry_run: bool,
    pub max_retries: u32,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VacuumReport {
    pub table: String,
    pub dry_run: bool,
    /// Files deleted (or, in a dry run, that would be).
    pub files: Vec<String>,
    /// The table version after the vacuum's commits (None: nothing was deleted).
    pub version: Option<u64>,
    pub seconds: f64,
}

/// Vacuum table `name`: refuses a retention below the minimum unless forced.
pub async fn vacuum(
    storage: &Storage,
    name: &str,
    opts: &VacuumOptions,
) -> Result<VacuumReport, MaintenanceError> {
    if opts.retention < opts.min_retention && !opts.force {
        return Err(MaintenanceError::Refused {
            table: name.to_string(),
            message: format!(
                "retention {} is below maintenance.vacuum.min_retention ({}): files of \
                 commits still in flight and of running queries could be deleted; pass \
                 --force if no writer or reader can take that long",
                humantime::format_duration(opts.retention),
                humantime::format_duration(opts.min_retention)
            ),
        });
    }
    let started = Instant::now();
    let (mut report, _) = retrying(storage, name, opts.max_retries, |t| {
        vacuum_once(t, name, opts)
    })
    .await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn vacuum_once(
    table: DeltaTable,
    name: &str,
    opts: &VacuumOptions,
) -> Result<VacuumReport, DeltaTableError> {
    let retention = chrono::Duration::from_std(opts.retention)
        .map_err(|e| DeltaTableError::Generic(format!("retention out of range: {e}")))?;
    let before = table.version();
    let (table, metrics) = table
        .vacuum()
        .with_retention_period(retention)
        // Our own minimum (above) replaces the table property's 7-day floor.
        .with_enforce_retention_duration(false)
        // Full: also files never committed (a writer killed between write and commit).
        .with_mode(VacuumMode::Full)
        .with_dry_run(opts.dry_run)
        .with_commit_properties(crate::storage::commit_properties())
        .await?;
    let mut files = metrics.files_deleted;
    files.sort();
    Ok(VacuumReport {
        table: name.to_string(),
        dry_run: opts.dry_run,
        version: (table.version() != before)
            .then_some(table.version())
            .flatten(),
        files,
        seconds: 0.0,
    })
}
