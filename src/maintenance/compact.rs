//! Compaction: bin-pack small files (or Z-order) where it pays, beside live writers.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::time::Instant;

use deltalake::kernel::Action;
use deltalake::operations::optimize::OptimizeType;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::{DeltaTable, DeltaTableError};
use serde::Serialize;

use super::{retrying, table_stats, MaintenanceError, TableStats};
use crate::sink::{add_rows, commit_actions};
use crate::storage::Storage;

#[derive(Debug, Clone)]
pub struct CompactOptions {
    pub target_file_size: u64,
    /// A partition is worth rewriting once it holds this many files below the target.
    pub min_small_files: usize,
    pub zorder_by: Vec<String>,
    pub max_retries: u32,
    pub writer_properties: WriterProperties,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactReport {
    pub table: String,
    /// The compaction commit; None when nothing paid for a rewrite.
    pub version: Option<u64>,
    pub files_removed: u64,
    pub files_added: u64,
    pub before: TableStats,
    pub after: TableStats,
    /// Attempts made (more than one after conflicts with concurrent commits).
    pub attempts: u32,
    pub seconds: f64,
    /// Why nothing was rewritten.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Compact table `name`, retrying from a fresh snapshot when a concurrent commit wins.
pub async fn compact(
    storage: &Storage,
    name: &str,
    opts: &CompactOptions,
) -> Result<CompactReport, MaintenanceError> {
    let started = Instant::now();
    let (mut report, attempts) = retrying(storage, name, opts.max_retries, |t| {
        compact_once(t, name, opts)
    })
    .await?;
    report.attempts = attempts;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn compact_once(
    table: DeltaTable,
    name: &str,
    opts: &CompactOptions,
) -> Result<CompactReport, DeltaTableError> {
    let before = table_stats(&table)?;
    let mut report = CompactReport {
        table: name.to_string(),
        version: None,
        files_removed: 0,
        files_added: 0,
        before,
        after: before,
        attempts: 0,
        seconds: 0.0,
        skipped: None,
    };
    let worst = most_small_files(&table, opts.target_file_size)?;
    if worst < opts.min_small_files {
        report.skipped = Some(format!(
            "no partition has {} files below the target size (most: {worst})",
            opts.min_small_files
        ));
        return Ok(report);
    }
    let rows_by_file = rows_by_file(&table)?;
    let kind = if opts.zorder_by.is_empty() {
        OptimizeType::Compact
    } else {
        OptimizeType::ZOrder(opts.zorder_by.clone())
    };
    let target = NonZeroU64::new(opts.target_file_size).unwrap_or(NonZeroU64::MIN);
    let (table, metrics) = table
        .optimize()
        .with_type(kind)
        .with_target_size(target)
        .with_writer_properties(opts.writer_properties.clone())
        .with_commit_properties(crate::storage::commit_properties())
        .await?;
    if metrics.num_files_added == 0 && metrics.num_files_removed == 0 {
        report.skipped = Some("nothing to bin-pack".into());
        return Ok(report);
    }
    let version = table.version();
    if let Some(v) = version {
        check_rows_kept(&table, v, &rows_by_file).await?;
    }
    report.version = version;
    report.files_removed = metrics.num_files_removed;
    report.files_added = metrics.num_files_added;
    report.after = table_stats(&table)?;
    Ok(report)
}

/// The largest number of below-target files in one partition (folder).
fn most_small_files(table: &DeltaTable, target: u64) -> Result<usize, DeltaTableError> {
    let mut per_partition: HashMap<String, usize> = HashMap::new();
    for file in table.snapshot()?.log_data().iter() {
        if (file.size().max(0) as u64) < target {
            let path = file.path();
            let folder = path.rsplit_once('/').map_or("", |(dir, _)| dir);
            *per_partition.entry(folder.to_string()).or_default() += 1;
        }
    }
    Ok(per_partition.into_values().max().unwrap_or(0))
}

fn rows_by_file(table: &DeltaTable) -> Result<HashMap<String, u64>, DeltaTableError> {
    Ok(table
        .snapshot()?
        .log_data()
        .iter()
        .map(|f| (f.path().to_string(), f.num_records().unwrap_or(0) as u64))
        .collect())
}

/// A compaction commit must carry exactly the rows of the files it removes: checked from
/// the commit's own actions, so a bug here could never pass silently.
async fn check_rows_kept(
    table: &DeltaTable,
    version: u64,
    rows_by_file: &HashMap<String, u64>,
) -> Result<(), DeltaTableError> {
    let Some(actions) = commit_actions(table, version).await? else {
        return Ok(());
    };
    let (mut added, mut removed) = (0u64, 0u64);
    for action in &actions {
        match action {
            Action::Add(add) => added += add_rows(add),
            Action::Remove(r) => removed += rows_by_file.get(&r.path).copied().unwrap_or(0),
            _ => {}
        }
    }
    if added != removed {
        return Err(DeltaTableError::Generic(format!(
            "compaction commit {version} added {added} rows but removed {removed}; \
             this is a bug: restore the table to version {} and report it",
            version.saturating_sub(1)
        )));
    }
    Ok(())
}
