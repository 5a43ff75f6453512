//! Where a stateful pipeline's state lives: a Parquet snapshot of the open aggregate
//! under `_lakestream/state/<pipeline>/` in the table's folder (Delta readers and vacuum
//! ignore folders starting with `_`), with the event-time clock in the file's own
//! metadata.
//!
//! The commit that installs a snapshot names it through `txn` actions, which checkpoints
//! keep (log entries may be cleaned up behind them): the batch id
//! (`lakestream.<pipeline>.batch`) and a random token (`lakestream.<pipeline>.state`)
//! give the path `<batch id>-<token>.parquet`. A snapshot is written before its commit,
//! so one whose commit never landed is an orphan nothing reads; the newest few are kept
//! for writers that read the table just before us, older ones are deleted.

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::logstore::object_store::ObjectStoreExt as _;
use deltalake::logstore::object_store::{ObjectStore, PutPayload};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::parquet::file::metadata::KeyValue;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::{DeltaTable, DeltaTableError, Path};
use futures::TryStreamExt as _;

use crate::engine::{Aggregate, Clock, StreamState};

/// Parquet metadata key of the clock.
const CLOCK_KEY: &str = "lakestream.clock";
/// Snapshots of this many batches before the latest are kept.
const KEEP_BATCHES: i64 = 8;

/// Which snapshot a table's latest commit names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StateRef {
    pub batch_id: i64,
    pub token: i64,
}

pub(super) fn state_app_id(pipeline: &str) -> String {
    format!("lakestream.{pipeline}.state")
}

fn folder(pipeline: &str) -> Path {
    Path::from(format!("_lakestream/state/{pipeline}"))
}

pub(super) fn path(pipeline: &str, r: StateRef) -> Path {
    Path::from(format!(
        "_lakestream/state/{pipeline}/{:020}-{:016x}.parquet",
        r.batch_id, r.token
    ))
}

/// A fresh token for the snapshot of batch `batch_id`: a retry or another writer never
/// overwrites a snapshot a landed commit names.
pub(super) fn new_ref(batch_id: i64) -> StateRef {
    let token = (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64;
    StateRef { batch_id, token }
}

/// The state snapshot `r` names; `Ok(None)` when the file is gone.
pub(super) async fn load(
    table: &DeltaTable,
    pipeline: &str,
    r: StateRef,
    schema: &SchemaRef,
    initial: StreamState,
) -> Result<Option<StreamState>, DeltaTableError> {
    let bytes = match table.object_store().get(&path(pipeline, r)).await {
        Ok(got) => got.bytes().await?,
        Err(deltalake::ObjectStoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let clock = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key == CLOCK_KEY))
        .and_then(|e| e.value.clone())
        .ok_or_else(|| DeltaTableError::Generic(format!("state {r:?} carries no clock")))?;
    let clock: Clock = serde_json::from_str(&clock)
        .map_err(|e| DeltaTableError::Generic(format!("bad clock in state {r:?}: {e}")))?;
    let batches = builder.build()?.collect::<Result<Vec<_>, _>>()?;
    let aggregate = match initial.aggregate {
        Some(_) => Some(Aggregate {
            rows: crate::engine::concat_rows(schema, &batches)?,
        }),
        None => None,
    };
    Ok(Some(StreamState { clock, aggregate }))
}

/// Write `state` as the snapshot `r` (before the commit that names it).
pub(super) async fn save(
    table: &DeltaTable,
    pipeline: &str,
    r: StateRef,
    state: &StreamState,
    schema: &SchemaRef,
) -> Result<(), DeltaTableError> {
    let clock = serde_json::to_string(&state.clock)
        .map_err(|e| DeltaTableError::Generic(format!("cannot encode the clock: {e}")))?;
    let rows = match &state.aggregate {
        Some(a) => a.rows.clone(),
        None => RecordBatch::new_empty(schema.clone()),
    };
    let bytes = encode(&rows, clock)?;
    table
        .object_store()
        .put(&path(pipeline, r), PutPayload::from(bytes))
        .await?;
    Ok(())
}

/// Delete snapshots of batches older than the last few before `latest` (best effort:
/// a leftover costs only space, and the next cleanup tries again).
pub(super) async fn prune(table: &DeltaTable, pipeline: &str, latest: i64) {
    let store = table.object_store();
    let listed: Result<Vec<_>, _> = store.list(Some(&folder(pipeline))).try_collect().await;
    let files = match listed {
        Ok(files) => files,
        Err(e) => {
            tracing::debug!(pipeline, error = %crate::report::Report(&e), "cannot list state snapshots");
            return;
        }
    };
    for file in files {
        let batch = file
            .location
            .filename()
            .and_then(|n| n.split('-').next())
            .and_then(|b| b.parse::<i64>().ok());
        if batch.is_some_and(|b| b < latest - KEEP_BATCHES) {
            if let Err(e) = store.delete(&file.location).await {
                tracing::debug!(path = %file.location, error = %crate::report::Report(&e), "old state snapshot not removed");
            }
        }
    }
}

/// A state recorded the way lakestream 0.1 did, in a commit's `lakestream` entry (only
/// readable while that log entry exists).
pub(super) async fn load_legacy(
    table: &DeltaTable,
    pipeline: &str,
    schema: &SchemaRef,
    initial: StreamState,
) -> Result<Option<StreamState>, DeltaTableError> {
    let info = super::entry::latest(table, |e| e.pipeline == pipeline && e.is_batch()).await?;
    let Some(state) = info.and_then(|i| i.state) else {
        return Ok(None);
    };
    let clock: Clock = state
        .clock
        .ok_or_else(|| DeltaTableError::Generic("no clock in the commit's state entry".into()))?;
    let aggregate = match (state.file.as_deref(), initial.aggregate) {
        (Some(file), Some(_)) => {
            let bytes = table
                .object_store()
                .get(&Path::from(file))
                .await?
                .bytes()
                .await?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            Some(Aggregate {
                rows: crate::engine::concat_rows(schema, &batches)?,
            })
        }
        (None, Some(a)) => Some(a),
        (_, None) => None,
    };
    Ok(Some(StreamState { clock, aggregate }))
}

fn encode(rows: &RecordBatch, clock: String) -> Result<Vec<u8>, DeltaTableError> {
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![KeyValue::new(CLOCK_KEY.to_string(), clock)]))
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, rows.schema(), Some(props))?;
    writer.write(rows)?;
    writer.close()?;
    Ok(buf)
}
