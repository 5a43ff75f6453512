//! A table's commits, newest first: what each one did and which micro-batch it was.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::kernel::Action;
use deltalake::{DeltaTable, DeltaTableError};

use super::travel::oldest_version;
use super::QueryError;
use crate::sink::{add_rows, commit_actions};
use crate::storage::Storage;

/// One commit; shown as a table (`history_batch`), so its columns are snake_case like
/// every query result.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub version: u64,
    /// Commit time, milliseconds since the epoch.
    pub timestamp: Option<i64>,
    pub operation: String,
    pub rows_added: u64,
    /// None when the removed files were added before the oldest log entry kept.
    pub rows_removed: Option<u64>,
    pub files_added: u64,
    pub files_removed: u64,
    pub pipeline: Option<String>,
    pub batch_id: Option<i64>,
    /// Kafka offsets the commit added, `partition:first-last`.
    pub offsets: Option<String>,
    /// What a commit did to the schema: `created: a, b` or `added: c BIGINT`.
    pub schema_change: Option<String>,
}

/// The last `limit` commits of table `name`, newest first.
pub async fn history(
    storage: &Storage,
    name: &str,
    limit: usize,
) -> Result<Vec<HistoryEntry>, QueryError> {
    let err = |e| QueryError::delta(name, e);
    let mut table = storage.open(name).await?;
    let latest = table.version().unwrap_or(0);
    let oldest = oldest_version(&table).await.map_err(err)?;
    let from = latest
        .saturating_sub(limit.saturating_sub(1) as u64)
        .max(oldest);
    // Rows of each live file before `from`, so removals can be counted in rows.
    let mut rows_by_file = HashMap::new();
    // The columns before `from`, so a commit's schema change reads as what it added.
    let mut columns = None;
    if from > oldest {
        table.load_version(from - 1).await.map_err(err)?;
        let snapshot = table.snapshot().map_err(err)?;
        for f in snapshot.log_data().iter() {
            rows_by_file.insert(f.path().to_string(), f.num_records().unwrap_or(0) as u64);
        }
        columns = Some(column_list(snapshot.schema().fields()));
    }
    let complete = from == 0 || from > oldest;
    let mut entries = Vec::new();
    for version in from..=latest {
        let e = entry(&table, version, &mut rows_by_file, complete, &mut columns).await;
        entries.push(e.map_err(err)?);
    }
    entries.reverse();
    Ok(entries)
}

async fn entry(
    table: &DeltaTable,
    version: u64,
    rows_by_file: &mut HashMap<String, u64>,
    complete: bool,
    columns: &mut Option<Vec<(String, String)>>,
) -> Result<HistoryEntry, DeltaTableError> {
    let actions = commit_actions(table, version).await?.unwrap_or_default();
    let mut e = HistoryEntry {
        version,
        timestamp: None,
        operation: String::new(),
        rows_added: 0,
        rows_removed: complete.then_some(0),
        files_added: 0,
        files_removed: 0,
        pipeline: None,
        batch_id: None,
        offsets: None,
        schema_change: None,
    };
    for action in actions {
        match action {
            Action::Add(add) => {
                let rows = add_rows(&add);
                e.files_added += 1;
                e.rows_added += rows;
                rows_by_file.insert(add.path, rows);
            }
            Action::Remove(remove) => {
                e.files_removed += 1;
                let rows = rows_by_file.remove(&remove.path);
                e.rows_removed = match (e.rows_removed, rows) {
                    (Some(total), Some(r)) => Some(total + r),
                    _ => None,
                };
            }
            Action::Metadata(metadata) => {
                let now = column_list(metadata.parse_schema()?.fields());
                e.schema_change = describe_change(columns.as_deref(), &now);
                *columns = Some(now);
            }
            Action::CommitInfo(info) => {
                e.timestamp = info.timestamp;
                e.operation = info.operation.unwrap_or_default();
                // Our own commit metadata (see `sink::commit`).
                let ours = crate::sink::CommitEntry::of(&info.info);
                e.pipeline = ours.as_ref().map(|o| o.pipeline.clone());
                e.batch_id = ours.as_ref().and_then(|o| o.batch_id);
                e.offsets = ours.and_then(|o| o.offsets).map(|o| {
                    o.iter()
                        .map(|(p, [first, last])| format!("{p}:{first}-{last}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                });
            }
            _ => {}
        }
    }
    Ok(e)
}

fn column_list<'a>(
    fields: impl Iterator<Item = &'a deltalake::kernel::StructField>,
) -> Vec<(String, String)> {
    fields
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect()
}

/// `created: a, b` for a first schema, `added: c long` for new columns, `changed` for
/// anything else (None when the columns stayed the same, e.g. a property change).
fn describe_change(
    before: Option<&[(String, String)]>,
    now: &[(String, String)],
) -> Option<String> {
    let list = |cols: &[(String, String)]| {
        cols.iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match before {
        None => Some(format!("created: {}", list(now))),
        Some(before) if before == now => None,
        Some(before) if now.starts_with(before) => {
            Some(format!("added: {}", list(&now[before.len()..])))
        }
        Some(_) => Some(format!("changed: {}", list(now))),
    }
}

/// The entries as a table, for the same output formats as queries.
pub fn history_batch(entries: &[HistoryEntry]) -> Result<RecordBatch, QueryError> {
    let schema = Schema::new(vec![
        Field::new("version", DataType::UInt64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("operation", DataType::Utf8, false),
        Field::new("rows_added", DataType::UInt64, false),
        Field::new("rows_removed", DataType::UInt64, true),
        Field::new("files_added", DataType::UInt64, false),
        Field::new("files_removed", DataType::UInt64, false),
        Field::new("pipeline", DataType::Utf8, true),
        Field::new("batch_id", DataType::Int64, true),
        Field::new("offsets", DataType::Utf8, true),
        Field::new("schema_change", DataType::Utf8, true),
    ]);
    let col = |f: fn(&HistoryEntry) -> u64| {
        Arc::new(UInt64Array::from_iter_values(entries.iter().map(f)))
    };
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            col(|e| e.version),
            Arc::new(
                TimestampMillisecondArray::from_iter(entries.iter().map(|e| e.timestamp))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|e| e.operation.as_str()),
            )),
            col(|e| e.rows_added),
            Arc::new(UInt64Array::from_iter(
                entries.iter().map(|e| e.rows_removed),
            )),
            col(|e| e.files_added),
            col(|e| e.files_removed),
            Arc::new(StringArray::from_iter(
                entries.iter().map(|e| e.pipeline.as_deref()),
            )),
            Arc::new(Int64Array::from_iter(entries.iter().map(|e| e.batch_id))),
            Arc::new(StringArray::from_iter(
                entries.iter().map(|e| e.offsets.as_deref()),
            )),
            Arc::new(StringArray::from_iter(
                entries.iter().map(|e| e.schema_change.as_deref()),
            )),
        ],
    )
    .map_err(|e| QueryError::Output(e.to_string()))
}

/// Table `name`'s columns as of `at`: name, type, nullable, partition column.
pub async fn schema(
    storage: &Storage,
    name: &str,
    at: super::At,
) -> Result<RecordBatch, QueryError> {
    let table = super::open_at(storage, name, at).await?;
    let snapshot = table.snapshot().map_err(|e| QueryError::delta(name, e))?;
    let partitions = snapshot.metadata().partition_columns().to_vec();
    let fields: Vec<_> = snapshot.schema().fields().cloned().collect();
    let out = Schema::new(vec![
        Field::new("column", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("nullable", DataType::Boolean, false),
        Field::new("partition", DataType::Boolean, false),
    ]);
    RecordBatch::try_new(
        Arc::new(out),
        vec![
            Arc::new(StringArray::from_iter_values(
                fields.iter().map(|f| f.name().clone()),
            )),
            Arc::new(StringArray::from_iter_values(
                fields.iter().map(|f| f.data_type().to_string()),
            )),
            Arc::new(BooleanArray::from_iter(
                fields.iter().map(|f| Some(f.is_nullable())),
            )),
            Arc::new(BooleanArray::from_iter(
                fields.iter().map(|f| Some(partitions.contains(f.name()))),
            )),
        ],
    )
    .map_err(|e| QueryError::Output(e.to_string()))
}
