//! What a Delta table holds beyond a mirrored version. Where the table keeps a change
//! data feed (update-mode tables do), only the rows its later commits inserted or
//! updated, in commit order: cost follows the change, not the table. Otherwise the rows
//! of the data files later commits added that are still live (a MERGE rewrites whole
//! files, so that re-sends unchanged rows). Read through delta-rs (so partition columns
//! come back); sending a row twice is harmless: the mirror upserts by key.

use std::collections::BTreeSet;

use deltalake::arrow::array::{AsArray, BooleanArray, RecordBatch};
use deltalake::arrow::compute::{
    concat_batches, filter_record_batch, sort_to_indices, take_record_batch,
};
use deltalake::datafusion::physical_plan::collect;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::delta_datafusion::{FileSelection, MissingSelectedFilePolicy};
use deltalake::{DeltaTable, DeltaTableError};

/// Rows to bring into the mirror at `version`.
pub struct Change {
    pub version: u64,
    pub batches: Vec<RecordBatch>,
    /// The whole table (first sync, complete mode, or the log entries needed were
    /// cleaned up) rather than only what is new.
    pub full: bool,
}

/// The change of `table` (at `version`) since `mirrored`; None when there is none.
/// `full` asks for the whole table.
pub async fn since(
    table: &DeltaTable,
    version: u64,
    mirrored: Option<u64>,
    full: bool,
) -> Result<Option<Change>, DeltaTableError> {
    if mirrored == Some(version) {
        return Ok(None);
    }
    if let Some(from) = mirrored.filter(|&from| !full && from < version) {
        if let Some(batches) = feed(table, from, version).await {
            return Ok(Some(Change {
                version,
                batches,
                full: false,
            }));
        }
    }
    let paths = match mirrored {
        Some(from) if !full && from < version => added_files(table, from, version).await?,
        _ => None,
    };
    let change = match paths {
        None => Change {
            version,
            batches: scan(table, None).await?,
            full: true,
        },
        Some(paths) if paths.is_empty() => Change {
            version,
            batches: Vec::new(),
            full: false,
        },
        Some(paths) => Change {
            version,
            batches: scan(table, Some(paths)).await?,
            full: false,
        },
    };
    Ok(Some(change))
}

/// Rows inserted or updated by commits `from+1..=to`, from the change data feed, oldest
/// commit first (so the mirror's upserts end on the newest value). `None` where the feed
/// cannot say: not enabled, or not for every commit in the range (enabled later, log
/// entries cleaned up), or it records deletes (the file reading path decides those).
async fn feed(table: &DeltaTable, from: u64, to: u64) -> Option<Vec<RecordBatch>> {
    let snapshot = table.snapshot().ok()?;
    if snapshot.table_config().enable_change_data_feed != Some(true) {
        return None;
    }
    let ctx = SessionContext::new();
    let plan = table
        .clone()
        .scan_cdf()
        .with_starting_version(from + 1)
        .with_ending_version(to)
        .build(&ctx.state(), None)
        .await
        .inspect_err(
            |e| tracing::debug!(error = %e, "change data feed not readable; reading files"),
        )
        .ok()?;
    let schema = plan.schema();
    let batches = collect(plan, ctx.task_ctx()).await.ok()?;
    let all = concat_batches(&schema, &batches).ok()?;
    let columns: Vec<String> = snapshot
        .snapshot()
        .arrow_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    Some(upserts(&all, &columns)?.into_iter().collect())
}

/// The inserted and post-update rows of the feed as the table's columns, sorted by
/// commit version; `None` if it holds a delete.
fn upserts(batch: &RecordBatch, columns: &[String]) -> Option<Option<RecordBatch>> {
    let kind = batch
        .column_by_name("_change_type")?
        .as_string_opt::<i32>()?;
    if kind.iter().any(|k| k == Some("delete")) {
        return None;
    }
    let keep: BooleanArray = kind
        .iter()
        .map(|k| Some(matches!(k, Some("insert" | "update_postimage"))))
        .collect();
    let kept = filter_record_batch(batch, &keep).ok()?;
    if kept.num_rows() == 0 {
        return Some(None);
    }
    let order = sort_to_indices(kept.column_by_name("_commit_version")?, None, None).ok()?;
    let sorted = take_record_batch(&kept, &order).ok()?;
    let indices: Vec<usize> = columns
        .iter()
        .map(|c| sorted.schema().index_of(c).ok())
        .collect::<Option<_>>()?;
    Some(Some(sorted.project(&indices).ok()?))
}

/// Paths of files added by commits `from+1..=to` (None when an entry is gone).
async fn added_files(
    table: &DeltaTable,
    from: u64,
    to: u64,
) -> Result<Option<BTreeSet<String>>, DeltaTableError> {
    let store = table.log_store();
    let mut paths = BTreeSet::new();
    for v in from + 1..=to {
        let entry = store.read_commit_entry(v).await?;
        let Some(bytes) = entry else {
            return Ok(None);
        };
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            // The path as the log writes it (percent-encoded), which is what the file
            // selection below matches against.
            let action: serde_json::Value = serde_json::from_slice(line)?;
            // Rewrites (dataChange false, e.g. compaction) count too: a file added and
            // compacted away before we looked lives on only in the rewrite.
            if let Some(path) = action.pointer("/add/path").and_then(|p| p.as_str()) {
                paths.insert(path.to_string());
            }
        }
    }
    Ok(Some(paths))
}

/// The table's rows, or only those of `paths` (files no longer live are skipped: their
/// rows are in the files that replaced them, which are in `paths` too).
async fn scan(
    table: &DeltaTable,
    paths: Option<BTreeSet<String>>,
) -> Result<Vec<RecordBatch>, DeltaTableError> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let mut builder = table.table_provider();
    if let Some(paths) = paths {
        builder = builder.with_file_selection(
            FileSelection::from_file_paths(paths)
                .with_missing_file_policy(MissingSelectedFilePolicy::Ignore),
        );
    }
    let provider = builder.await?;
    let df = ctx.read_table(provider)?;
    Ok(df.collect().await?)
}
