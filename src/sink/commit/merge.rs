//! The one MERGE both update mode (aggregate rows by their keys) and upsert mode (one
//! change per key, deletes included) commit with.

use std::time::Instant;

use deltalake::arrow::array::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::DeltaTableError;

use super::batch::ms_since;
use super::delta_sink::DeltaSink;

/// What a MERGE by `keys` does with the batch's rows. Keys compare null-safe: a NULL
/// key is a key too.
pub(super) struct Merge<'a> {
    pub keys: &'a [String],
    /// Matched rows meeting this predicate are deleted (none when `None`).
    pub delete_when: Option<String>,
    /// Matched rows (meeting `update_when`, if set) take these columns' new values.
    pub update: &'a [String],
    pub update_when: Option<String>,
    /// Rows without a match (meeting `insert_when`, if set) are inserted with these.
    pub insert: &'a [String],
    pub insert_when: Option<String>,
}

/// MERGE `rows` into the table as `merge` says, committed with `props` (the batch's
/// offsets); the table's new version.
pub(super) async fn merge(
    sink: &mut DeltaSink,
    rows: RecordBatch,
    merge: Merge<'_>,
    props: CommitProperties,
) -> Result<i64, DeltaTableError> {
    let t = Instant::now();
    let source = SessionContext::new().read_batch(rows)?;
    let mut builder = sink
        .table
        .clone()
        .merge(source, key_match(merge.keys))
        .with_source_alias("source")
        .with_target_alias("target")
        .with_commit_properties(props);
    if let Some(delete) = &merge.delete_when {
        builder = builder.when_matched_delete(|d| d.predicate(delete.as_str()))?;
    }
    let (table, _metrics) = builder
        .when_matched_update(|mut u| {
            if let Some(when) = &merge.update_when {
                u = u.predicate(when.as_str());
            }
            for c in merge.update {
                u = u.update(format!("\"{c}\""), format!("source.\"{c}\""));
            }
            u
        })?
        .when_not_matched_insert(|mut i| {
            if let Some(when) = &merge.insert_when {
                i = i.predicate(when.as_str());
            }
            for c in merge.insert {
                i = i.set(format!("\"{c}\""), format!("source.\"{c}\""));
            }
            i
        })?
        .await?;
    sink.timings.commit_ms += ms_since(t);
    sink.table = table;
    sink.table
        .version()
        .map(|v| v as i64)
        .ok_or_else(|| DeltaTableError::Generic("no version after MERGE".into()))
}

/// A MERGE's match on `keys`: `target.k IS NOT DISTINCT FROM source.k AND ...`.
fn key_match(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("(target.\"{k}\" IS NOT DISTINCT FROM source.\"{k}\")"))
        .collect::<Vec<_>>()
        .join(" AND ")
}
