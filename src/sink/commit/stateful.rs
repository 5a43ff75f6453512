//! Commits of stateful pipelines: the query runs over the new part of the batch with
//! the state the table names, and the output (appended, MERGEd or replacing the whole
//! result) is committed with the next state snapshot's name in one commit.

use std::time::Instant;

use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::OutputMode;
use deltalake::DeltaTableError;

use super::batch::{ms_since, AttemptError, Extra};
use super::batch::{BatchInfo, CommitOutcome};
use super::delta_sink::DeltaSink;
use super::replay::rows_beyond;
use crate::engine::{Emit, Engine, Shape, StreamState};
use crate::sink::entry::StateEntry;
use crate::sink::state::{self, StateRef};
use crate::sink::SinkError;

/// The state as of the table's latest commit by this pipeline. A table whose
/// pipeline committed batches but whose state cannot be found is an error: starting
/// from empty state would silently corrupt every aggregate.
pub(super) async fn stream_state(
    sink: &mut DeltaSink,
    engine: &Engine,
) -> Result<StreamState, SinkError> {
    if sink.stream_checked {
        if let Some((_, s)) = &sink.stream {
            return Ok(s.clone());
        }
    }
    let err = |e| SinkError::delta(&sink.name, e);
    let batch = sink.txn_version(sink.batch_app_id()).await.map_err(err)?;
    let token = sink
        .txn_version(state::state_app_id(&sink.opts.pipeline))
        .await
        .map_err(err)?;
    let named = batch
        .zip(token)
        .map(|(batch_id, token)| StateRef { batch_id, token });
    let current = match sink.stream.take() {
        Some((r, s)) if r == named && (named.is_some() || batch.is_none()) => s,
        _ if batch.is_none() || !engine.keeps_state() => engine.empty_state(),
        _ => {
            let schema = engine.output_schema();
            let loaded = match named {
                Some(r) => {
                    state::load(
                        &sink.table,
                        &sink.opts.pipeline,
                        r,
                        &schema,
                        engine.empty_state(),
                    )
                    .await
                }
                None => {
                    state::load_legacy(
                        &sink.table,
                        &sink.opts.pipeline,
                        &schema,
                        engine.empty_state(),
                    )
                    .await
                }
            }
            .map_err(err)?;
            let Some(s) = loaded else {
                return Err(state_missing(sink, batch, named));
            };
            StreamState {
                clock: s.clock.restarted(Instant::now()),
                ..s
            }
        }
    };
    sink.stream = Some((named, current.clone()));
    sink.stream_checked = true;
    Ok(current)
}

fn state_missing(sink: &DeltaSink, batch: Option<i64>, named: Option<StateRef>) -> SinkError {
    let pipeline = &sink.opts.pipeline;
    let why = match named {
        Some(r) => format!(
            "its snapshot {} is missing from the table's folder",
            state::path(pipeline, r)
        ),
        None => "it was recorded in log entries that have been cleaned up (tables \
                 written before lakestream kept state in checkpointed records)"
            .to_string(),
    };
    SinkError::StateMissing {
        table: sink.name.clone(),
        message: format!(
            "pipeline '{pipeline}' committed batches up to {} but its state cannot be \
             found: {why}. Starting from empty state would make every aggregate wrong. \
             Restore the snapshot from a backup, or rebuild: delete the table (and its \
             _lakestream folder) and run the pipeline again from the topic",
            batch.unwrap_or(-1)
        ),
    }
}

pub(super) async fn try_stream(
    sink: &mut DeltaSink,
    rows: &RecordBatch,
    batch: &BatchInfo,
    engine: &mut Engine,
) -> Result<CommitOutcome, AttemptError> {
    let part = sink.new_part(batch).await?;
    let Some(new_ranges) = part.ranges.clone() else {
        return Ok(CommitOutcome::AlreadyCommitted);
    };
    let (committed, record) = (&part.committed, &part.record);
    let input = rows_beyond(rows, batch, &new_ranges, committed)?;
    let t = Instant::now();
    let current = sink
        .stream_state(engine)
        .await
        .map_err(AttemptError::Fatal)?;
    let step = engine
        .process(&input, &current)
        .await
        .map_err(AttemptError::Engine)?;
    sink.timings.query_ms += ms_since(t);
    let batch_id = sink.next_batch_id().await?;
    let t = Instant::now();
    let snapshot = engine.keeps_state().then(|| state::new_ref(batch_id));
    if let Some(r) = snapshot {
        let schema = engine.output_schema();
        state::save(&sink.table, &sink.opts.pipeline, r, &step.state, &schema).await?;
        crate::failpoint::hit("after_state_write", &sink.opts.pipeline);
    }
    sink.timings.write_ms += ms_since(t);
    let entry = StateEntry {
        late_rows: step.late_rows,
        watermark: step.state.clock.watermark,
        rows: step.state.aggregate.as_ref().map(|a| a.len()),
        file: snapshot.map(|r| state::path(&sink.opts.pipeline, r).to_string()),
        clock: None,
    };
    let emitted = step.emit.rows().num_rows();
    let mut props = sink.properties(
        record,
        &new_ranges,
        (Some(batch_id), batch.topic_id),
        emitted,
        Extra::State(entry),
    );
    if let Some(r) = snapshot {
        props = props.with_application_transaction(Transaction::new(
            state::state_app_id(&sink.opts.pipeline),
            r.token,
        ));
    }
    let version = commit_emit(sink, &step.emit, engine.shape(), props, batch_id).await?;
    sink.landed(record, batch, Some(batch_id));
    let state_rows = step.state.aggregate.as_ref().map_or(0, |a| a.len());
    let watermark = step.state.clock.watermark;
    sink.stream = Some((snapshot, step.state));
    if snapshot.is_some() && batch_id % 16 == 0 {
        state::prune(&sink.table, &sink.opts.pipeline, batch_id).await;
    }
    Ok(CommitOutcome::Committed {
        version,
        batch_id: Some(batch_id),
        rows: emitted,
        input_rows: input.num_rows(),
        late_rows: step.late_rows,
        state_rows,
        watermark,
    })
}

/// Commit what the query emitted: appended, replacing the whole result, or MERGEd.
async fn commit_emit(
    sink: &mut DeltaSink,
    emit: &Emit,
    shape: &Shape,
    props: CommitProperties,
    batch_id: i64,
) -> Result<i64, DeltaTableError> {
    Ok(match emit {
        Emit::Append(out) => {
            let adds = sink.write(out).await?;
            let actions = adds.into_iter().map(Action::Add).collect();
            sink.commit_actions(actions, props, OutputMode::Append, Some(batch_id))
                .await?
        }
        Emit::Replace(out) => {
            let mut actions: Vec<Action> = sink
                .table
                .snapshot()?
                .log_data()
                .into_iter()
                .map(|f| Action::Remove(f.remove_action(true)))
                .collect();
            actions.extend(sink.write(out).await?.into_iter().map(Action::Add));
            sink.commit_actions(actions, props, OutputMode::Complete, Some(batch_id))
                .await?
        }
        Emit::Merge(out) if out.num_rows() == 0 => {
            sink.commit_actions(Vec::new(), props, OutputMode::Update, Some(batch_id))
                .await?
        }
        Emit::Merge(out) => merge_aggregate(sink, out, shape, props).await?,
    })
}

/// MERGE `rows` by the query's keys: matched rows take the new (absolute) values,
/// new keys are inserted.
async fn merge_aggregate(
    sink: &mut DeltaSink,
    rows: &RecordBatch,
    shape: &Shape,
    props: CommitProperties,
) -> Result<i64, DeltaTableError> {
    let Shape::Aggregate { keys, values } = shape else {
        return Err(DeltaTableError::Generic(
            "update mode needs an aggregate".into(),
        ));
    };
    let update: Vec<String> = values.iter().map(|(v, _)| v.clone()).collect();
    let insert: Vec<String> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let merge = super::merge::Merge {
        keys,
        delete_when: None,
        update: &update,
        update_when: None,
        insert: &insert,
        insert_when: None,
    };
    super::merge::merge(sink, rows.clone(), merge, props).await
}
