//! Where a stateful pipeline's state lives: a Parquet snapshot of the open aggregate
//! under `_lakestream/state/<pipeline>/` in the table's folder (Delta readers and vacuum
//! ignore folders starting with `_`), named by the commit that records it together with
//! the event-time clock. A snapshot is written before that commit, so the state that
//! belongs to the table's latest batch is always the one its latest commit names; a
//! snapshot whose commit never landed is an orphan that nothing reads.

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::logstore::object_store::ObjectStoreExt as _;
use deltalake::logstore::object_store::PutPayload;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::{DeltaTable, DeltaTableError, Path};
use serde_json::{json, Value};

use crate::engine::{Aggregate, Clock, StreamState};

/// The `lakestream` entry of the latest commit this pipeline made, and its version.
pub async fn latest_commit_info(
    table: &DeltaTable,
    pipeline: &str,
) -> Result<Option<(i64, Value)>, DeltaTableError> {
    let Some(latest) = table.version() else {
        return Ok(None);
    };
    let log_store = table.log_store();
    for version in (0..=latest).rev() {
        // Log entries cleaned up behind a checkpoint end the search.
        let Some(bytes) = log_store.read_commit_entry(version).await? else {
            break;
        };
        for line in bytes.split(|b| *b == b'\n') {
            let Ok(action) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            let info = &action["commitInfo"]["lakestream"];
            if info["pipeline"].as_str() == Some(pipeline) {
                return Ok(Some((version as i64, info.clone())));
            }
        }
    }
    Ok(None)
}

/// The state a commit's `lakestream` entry names (`initial` when it names none).
pub async fn load(
    table: &DeltaTable,
    info: &Value,
    schema: &SchemaRef,
    initial: StreamState,
) -> Result<StreamState, DeltaTableError> {
    let Some(state) = info.get("state") else {
        return Ok(initial);
    };
    let clock: Clock = serde_json::from_value(state["clock"].clone())
        .map_err(|e| DeltaTableError::Generic(format!("bad clock in commit info: {e}")))?;
    let aggregate = match state["file"].as_str() {
        Some(file) => {
            let bytes = table
                .object_store()
                .get(&Path::from(file))
                .await?
                .bytes()
                .await?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            let rows = crate::engine::concat_rows(schema, &batches)?;
            Some(Aggregate { rows })
        }
        None => None,
    };
    Ok(StreamState { clock, aggregate })
}

/// Write the open aggregate of `state` next to the table; returns the commit-info entry
/// that names it.
pub async fn save(
    table: &DeltaTable,
    pipeline: &str,
    batch_id: i64,
    state: &StreamState,
) -> Result<(Value, Option<Path>), DeltaTableError> {
    let clock = serde_json::to_value(&state.clock)
        .map_err(|e| DeltaTableError::Generic(format!("cannot encode the clock: {e}")))?;
    let Some(aggregate) = &state.aggregate else {
        return Ok((json!({ "clock": clock }), None));
    };
    let path = Path::from(format!(
        "_lakestream/state/{pipeline}/{batch_id:020}-{}.parquet",
        uuid::Uuid::new_v4()
    ));
    let bytes = encode(&aggregate.rows)?;
    table
        .object_store()
        .put(&path, PutPayload::from(bytes))
        .await?;
    let entry = json!({ "clock": clock, "file": path.to_string(), "rows": aggregate.len() });
    Ok((entry, Some(path)))
}

/// Remove a snapshot no commit can need any more (best effort).
pub async fn delete(table: &DeltaTable, path: &Path) {
    if let Err(e) = table.object_store().delete(path).await {
        tracing::debug!(path = %path, error = %e, "old state snapshot not removed");
    }
}

fn encode(rows: &RecordBatch) -> Result<Vec<u8>, DeltaTableError> {
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, rows.schema(), None)?;
    writer.write(rows)?;
    writer.close()?;
    Ok(buf)
}
