//! What a Delta table holds beyond a mirrored version: the rows of the data files its
//! later commits added and that are still live, read through delta-rs (so partition
//! columns come back). Reading a file twice is harmless: the mirror upserts by key.

use std::collections::BTreeSet;

use deltalake::arrow::array::RecordBatch;
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
