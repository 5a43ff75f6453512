//! Compaction: bin-pack small files (or Z-order) where it pays, beside live writers.

use std::collections::{HashMap, HashSet};
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
    let Some(table) = claim(table).await? else {
        report.skipped = Some("another compaction of this table is running".into());
        return Ok(report);
    };
    let rows_by_file = rows_by_file(&table)?;
    let kind = if opts.zorder_by.is_empty() {
        OptimizeType::Compact
    } else {
        OptimizeType::ZOrder(opts.zorder_by.clone())
    };
    let target = NonZeroU64::new(opts.target_file_size).unwrap_or(NonZeroU64::MIN);
    let read = table.version();
    let optimized = table
        .optimize()
        .with_type(kind)
        .with_target_size(target)
        .with_writer_properties(opts.writer_properties.clone())
        .with_commit_properties(crate::storage::commit_properties())
        .await;
    let (table, metrics) = match optimized {
        Err(e) if lost_to_a_claim(&e) => {
            report.skipped = Some("another compaction of this table took over".into());
            return Ok(report);
        }
        other => other?,
    };
    if metrics.num_files_added == 0 && metrics.num_files_removed == 0 {
        report.skipped = Some("nothing to bin-pack".into());
        return Ok(report);
    }
    let version = table.version();
    if let Some(v) = version {
        let ours = commit_actions(&table, v).await?.unwrap_or_default();
        check_rows_kept(&ours, v, &rows_by_file)?;
        check_rewritten_once(&table, &ours, (read, v)).await?;
    }
    report.version = version;
    report.files_removed = metrics.num_files_removed;
    report.files_added = metrics.num_files_added;
    report.after = table_stats(&table)?;
    Ok(report)
}

/// The table property a compaction sets before it plans, so that two at once conflict.
/// delta-rs (since 1.1.3, delta-io/delta-rs#3982) lets two rewrites of one file commit
/// when both remove it with `dataChange = false`, and its optimize re-commits past
/// concurrent commits with that check alone (it keeps nothing of our commit properties
/// but their metadata): two members' schedules compacting the same small files at once
/// would leave their rows in the table twice. A claim is a `metaData` change, and every
/// Delta commit that did not read it fails on it: the first compaction to commit wins,
/// an earlier claimant fails and steps aside, appends go on untouched.
const CLAIM: &str = "lakestream.compaction.claim";

/// Claim `table` for one compaction; None when another compaction claimed it at the
/// same moment (that one goes on; this one steps aside).
async fn claim(table: DeltaTable) -> Result<Option<DeltaTable>, DeltaTableError> {
    let id = uuid::Uuid::new_v4().to_string();
    match table
        .set_tbl_properties()
        .with_properties(HashMap::from([(CLAIM.to_string(), id)]))
        .with_raise_if_not_exists(false)
        .with_commit_properties(crate::storage::commit_properties())
        .await
    {
        Ok(table) => Ok(Some(table)),
        Err(e) if lost_to_a_claim(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The commit failed on another commit's `metaData` change: another claim (or a
/// schema change, after which a new plan is due anyway).
fn lost_to_a_claim(e: &DeltaTableError) -> bool {
    use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
    matches!(
        e,
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::MetadataChanged)
        }
    )
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
fn check_rows_kept(
    actions: &[Action],
    version: u64,
    rows_by_file: &HashMap<String, u64>,
) -> Result<(), DeltaTableError> {
    let (mut added, mut removed) = (0u64, 0u64);
    for action in actions {
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

/// No commit between the compaction's snapshot (`read`) and its own (`version`) removed
/// a file the compaction removed: another engine's compaction (which does not carry our
/// app id) could still rewrite the same files at once, and its rows would then be in the
/// table twice. Never silent: the error says which commits and what to do.
async fn check_rewritten_once(
    table: &DeltaTable,
    ours: &[Action],
    (read, version): (Option<u64>, u64),
) -> Result<(), DeltaTableError> {
    let Some(read) = read else { return Ok(()) };
    if version <= read + 1 {
        return Ok(());
    }
    let ours = removed_paths(ours.iter());
    for between in read + 1..version {
        let actions = commit_actions(table, between).await?.unwrap_or_default();
        let theirs = removed_paths(actions.iter());
        if let Some(path) = ours.iter().find(|p| theirs.contains(*p)) {
            return Err(DeltaTableError::Generic(format!(
                "compaction commit {version} rewrote {path}, which commit {between} had \
                 already rewritten (another engine compacting this table at the same time?): \
                 those rows are now in the table twice. Let one engine compact this table, \
                 and undo commit {version} (a Delta RESTORE to version {} if nothing was \
                 committed after it)",
                version - 1
            )));
        }
    }
    Ok(())
}

fn removed_paths<'a>(actions: impl Iterator<Item = &'a Action>) -> HashSet<&'a str> {
    actions
        .filter_map(|a| match a {
            Action::Remove(r) => Some(r.path.as_str()),
            _ => None,
        })
        .collect()
}
