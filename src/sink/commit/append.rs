//! Commits of pipelines that append the decoded records as they are: the new part of
//! the batch is written as data files and committed with its offsets (and, when it
//! carries fields the table lacks, the schema change) in one commit.

use std::collections::BTreeMap;
use std::time::Instant;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::{Action, Add};
use deltalake::protocol::OutputMode;
use tracing::info;

use super::batch::{ms_since, AttemptError, Extra};
use super::batch::{BatchInfo, CommitOutcome};
use super::delta_sink::DeltaSink;
use super::replay::rows_beyond;
use crate::sink::table::{widen, widened_metadata, write_files};
use crate::source::OffsetRange;

pub(super) async fn try_commit(
    sink: &mut DeltaSink,
    rows: &RecordBatch,
    batch: &BatchInfo,
    written: &mut Option<Written>,
) -> Result<CommitOutcome, AttemptError> {
    let part = sink.new_part(batch).await?;
    let Some(new_ranges) = part.ranges.clone() else {
        return Ok(CommitOutcome::AlreadyCommitted);
    };
    let (committed, record) = (&part.committed, &part.record);
    let files = match written.take() {
        Some(files) if files.ranges == new_ranges => files,
        _ => {
            let keep = rows_beyond(rows, batch, &new_ranges, committed)?;
            let rows = keep.num_rows();
            let schema = keep.schema();
            let t = Instant::now();
            let adds = write_files(
                &sink.table,
                keep,
                sink.props.clone(),
                sink.opts.target_file_size,
                &sink.opts.storage,
            )
            .await?;
            sink.timings.write_ms += ms_since(t);
            Written {
                ranges: new_ranges.clone(),
                adds,
                rows,
                schema,
            }
        }
    };
    let rows_added = files.rows;
    let adds = files.adds.clone();
    // New columns (schema evolution) join the table in the commit that first
    // carries them, decided against the snapshot this attempt commits on.
    let widened = widen(&sink.table, &files.schema)?;
    *written = Some(files);
    let batch_id = sink.batch_id_for(batch).await?;
    let props = sink.properties(
        record,
        &new_ranges,
        (batch_id, batch.topic_id),
        rows_added,
        Extra::Nothing,
    );
    let mut actions = Vec::with_capacity(adds.len() + 1);
    if let Some(schema) = &widened {
        crate::failpoint::hit("before_schema_change", &sink.opts.pipeline);
        actions.push(widened_metadata(&sink.table, schema)?);
        info!(table = %sink.name, columns = ?schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>(), "adding columns to the table");
    }
    actions.extend(adds.into_iter().map(Action::Add));
    let version = sink
        .commit_actions(actions, props, OutputMode::Append, batch_id)
        .await?;
    *written = None;
    sink.landed(record, batch, batch_id);
    Ok(CommitOutcome::Committed {
        version,
        batch_id,
        rows: rows_added,
        input_rows: rows_added,
        late_rows: 0,
        state_rows: 0,
        watermark: None,
    })
}

/// Data files already written for the new part of a batch, reused when a retry finds
/// the same part still missing from the table.
pub(super) struct Written {
    ranges: BTreeMap<i32, OffsetRange>,
    adds: Vec<Add>,
    rows: usize,
    /// The rows' columns (wider than the table's after schema evolution).
    schema: SchemaRef,
}
