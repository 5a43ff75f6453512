//! What a Delta table holds beyond a mirrored version. Where the table keeps a change
//! data feed (update and upsert tables do), only the net change of its later commits:
//! per key, the last row inserted or updated, or the key deleted. Cost follows the
//! change, not the table. Otherwise the rows
//! of the data files later commits added that are still live (a MERGE rewrites whole
//! files, so that re-sends unchanged rows). Read through delta-rs (so partition columns
//! come back); sending a row twice is harmless: the mirror upserts by key.

use std::collections::BTreeSet;

use deltalake::arrow::array::{AsArray, BooleanArray, RecordBatch};
use deltalake::arrow::compute::kernels::boolean::not;
use deltalake::arrow::compute::{
    concat_batches, filter_record_batch, sort_to_indices, take_record_batch,
};
use deltalake::datafusion::physical_plan::collect;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::delta_datafusion::{FileSelection, MissingSelectedFilePolicy};
use deltalake::{DeltaTable, DeltaTableError};

/// Rows to bring into the mirror at `version`.
pub(super) struct Change {
    pub version: u64,
    pub batches: Vec<RecordBatch>,
    /// Keys (the key columns) whose rows were deleted.
    pub deletes: Option<RecordBatch>,
    /// The whole table (first sync, complete mode, or the log entries needed were
    /// cleaned up) rather than only what is new.
    pub full: bool,
}

/// The change of `table` (at `version`) since `mirrored`; None when there is none.
/// `full` asks for the whole table. `keys` identify a row; where rows are deleted by
/// key (upsert tables), only the change data feed can tell what changed: without it
/// the whole table is read.
pub(super) async fn since(
    table: &DeltaTable,
    version: u64,
    mirrored: Option<u64>,
    full: bool,
    keys: &[String],
    deletes: bool,
) -> Result<Option<Change>, DeltaTableError> {
    if mirrored == Some(version) {
        return Ok(None);
    }
    if let Some(from) = mirrored.filter(|&from| !full && from < version) {
        if let Some((batches, deleted)) = feed(table, from, version, keys).await {
            return Ok(Some(Change {
                version,
                batches,
                deletes: deleted,
                full: false,
            }));
        }
    }
    let paths = match mirrored {
        Some(from) if !full && !deletes && from < version => {
            added_files(table, from, version).await?
        }
        _ => None,
    };
    let change = match paths {
        None => Change {
            version,
            batches: scan(table, None, None).await?,
            deletes: None,
            full: true,
        },
        Some(paths) if paths.is_empty() => Change {
            version,
            batches: Vec::new(),
            deletes: None,
            full: false,
        },
        Some(paths) => Change {
            version,
            batches: scan(table, Some(paths), None).await?,
            deletes: None,
            full: false,
        },
    };
    Ok(Some(change))
}

/// The net change of commits `from+1..=to` from the change data feed: per key, the last
/// row inserted or updated (as the table's columns), or its deletion. `None` where the
/// feed cannot say: not enabled, or not for every commit in the range (enabled later,
/// log entries cleaned up), or deletes in a table without keys.
async fn feed(
    table: &DeltaTable,
    from: u64,
    to: u64,
    keys: &[String],
) -> Option<(Vec<RecordBatch>, Option<RecordBatch>)> {
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
    let (upserts, deletes) = net(&all, &columns, keys)?;
    Some((upserts.into_iter().collect(), deletes))
}

/// The feed's inserted, post-update and deleted rows reduced to the last change per key
/// (by commit version): the rows to upsert (the table's columns) and the keys to delete.
fn net(
    batch: &RecordBatch,
    columns: &[String],
    keys: &[String],
) -> Option<(Option<RecordBatch>, Option<RecordBatch>)> {
    let kind = batch
        .column_by_name("_change_type")?
        .as_string_opt::<i32>()?;
    let has_deletes = kind.iter().any(|k| k == Some("delete"));
    if has_deletes && keys.is_empty() {
        return None;
    }
    let keep: BooleanArray = kind
        .iter()
        .map(|k| Some(matches!(k, Some("insert" | "update_postimage" | "delete"))))
        .collect();
    let kept = filter_record_batch(batch, &keep).ok()?;
    if kept.num_rows() == 0 {
        return Some((None, None));
    }
    let order = sort_to_indices(kept.column_by_name("_commit_version")?, None, None).ok()?;
    let sorted = take_record_batch(&kept, &order).ok()?;
    let last = match has_deletes {
        true => last_per_key(&sorted, keys)?,
        false => sorted,
    };
    let deleted: BooleanArray = last
        .column_by_name("_change_type")?
        .as_string_opt::<i32>()?
        .iter()
        .map(|k| Some(k == Some("delete")))
        .collect();
    let project = |batch: &RecordBatch, names: &[String]| -> Option<RecordBatch> {
        let indices: Vec<usize> = names
            .iter()
            .map(|c| batch.schema().index_of(c).ok())
            .collect::<Option<_>>()?;
        batch.project(&indices).ok()
    };
    let upserts = filter_record_batch(&last, &not(&deleted).ok()?).ok()?;
    let deletes = filter_record_batch(&last, &deleted).ok()?;
    let upserts = (upserts.num_rows() > 0)
        .then(|| project(&upserts, columns))
        .flatten();
    let deletes = (deletes.num_rows() > 0)
        .then(|| project(&deletes, keys))
        .flatten();
    Some((upserts, deletes))
}

/// The last row of each key of `sorted` (oldest first), in order.
fn last_per_key(sorted: &RecordBatch, keys: &[String]) -> Option<RecordBatch> {
    let kept = crate::engine::last_per_key(sorted, keys, |_, _| true).ok()?;
    take_record_batch(sorted, &kept).ok()
}

/// One line of a commit entry: only its `add` action matters here (the other kinds,
/// including ones newer than this delta-rs, are skipped unread).
#[derive(serde::Deserialize)]
struct LogAction {
    add: Option<deltalake::kernel::Add>,
}

/// Paths of files added by commits `from+1..=to` (None when an entry is gone).
pub(super) async fn added_files(
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
            // delta-rs's own `Add`, with the path as the log writes it (percent-encoded),
            // which is what the file selection below matches against. Rewrites
            // (dataChange false, e.g. compaction) count too: a file added and compacted
            // away before we looked lives on only in the rewrite.
            let action: LogAction = serde_json::from_slice(line)?;
            if let Some(add) = action.add {
                paths.insert(add.path);
            }
        }
    }
    Ok(Some(paths))
}

/// The table's rows, or only those of `paths` (files no longer live are skipped: their
/// rows are in the files that replaced them, which are in `paths` too); all columns or
/// only `columns`.
pub(super) async fn scan(
    table: &DeltaTable,
    paths: Option<BTreeSet<String>>,
    columns: Option<&[&str]>,
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
    let mut df = ctx.read_table(provider)?;
    if let Some(columns) = columns {
        df = df.select_columns(columns)?;
    }
    Ok(df.collect().await?)
}
