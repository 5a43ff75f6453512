//! One batch's commit: dead letters, then the rows through the pipeline's output, then
//! the counters and the progress record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;

use deltalake::arrow::array::{AsArray, BooleanArray, RecordBatch};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{Int32Type, Int64Type};
use tracing::info;

use super::progress::BatchReport;
use super::stages::{Feed, Ready};
use super::task::{Output, Pipeline};
use super::RunOptions;
use crate::config::kafka_columns;
use crate::decode::Decoded;
use crate::engine::Derive;
use crate::sink::{BatchInfo, CommitOutcome, DeltaSink, Write};
use crate::Result;

/// Dead letters first, then the rows: the consumer resumes from the row table's
/// offsets, so a crash between the two replays the batch and the dead-letter table
/// skips what it already holds.
pub(super) async fn commit(
    p: &Pipeline,
    ready: Ready,
    (table, dead): (&mut DeltaSink, &mut DeltaSink),
    feed: &Feed,
    (output, derive): (&mut Output, &Derive),
    opts: RunOptions,
) -> Result<()> {
    let through = ready
        .positions
        .iter()
        .map(|(&p, &position)| (p, position - 1))
        .collect();
    if ready.records == 0 {
        // Positions only: the consumer passed offsets that are no records (markers,
        // aborted or compacted records), or reached the end of partitions.
        let info = BatchInfo {
            ranges: BTreeMap::new(),
            with_batch_id: false,
            topic_id: ready.topic_id,
            through,
        };
        table.advance(&info).await?;
        feed.group.committed(feed.slot, &table.held(&info));
        return Ok(());
    }
    if let Output::Query(engine) = output {
        engine.set_behind(behind(&feed.source.high_watermarks(), &ready.positions));
    }
    let (rows, dead_letters) = rows(p, &ready.decoded, output, derive).await?;
    // The dead-letter table's offsets only tell replays apart: no positions.
    let info = BatchInfo {
        ranges: ready.ranges.clone(),
        with_batch_id: false,
        topic_id: ready.topic_id,
        through: BTreeMap::new(),
    };
    let dead_rows = commit_dead_letters(p, dead, &dead_letters, &info).await?;
    let info = BatchInfo {
        with_batch_id: true,
        through,
        ..info
    };
    let outcome = table.commit(&rows, &info, output.write()).await?;
    match outcome {
        CommitOutcome::Committed { .. } => {
            crate::failpoint::hit("after_commit", &p.spec.name);
            p.offer_to_catalog(table);
        }
        // Replayed records: the positions past them may still be new.
        CommitOutcome::AlreadyCommitted => {
            table.advance(&info).await?;
        }
    }
    // What the table holds, not what the batch held: lag tools never see more.
    feed.group.committed(feed.slot, &table.held(&info));
    let conflicts = table.timings().conflicts + dead.timings().conflicts;
    count(p, &ready, &outcome, rows.num_rows(), dead_rows, conflicts);
    let batch = BatchReport {
        opened_at: ready.opened_at,
        fetch_ms: ready.fetch_ms,
        decode_ms: ready.decode_ms,
        records: ready.records,
        dead_letters: dead_rows,
        ranges: &ready.ranges,
        produced: ready.produced,
    };
    let progress = super::progress::progress(p, &batch, &outcome, table, &feed.source);
    if opts.progress_json {
        eprintln!("{}", serde_json::to_string(&progress).unwrap_or_default());
    } else {
        info!(pipeline = %p.spec.name, "{}", progress.line());
    }
    p.metrics.record(progress);
    Ok(())
}

/// The rows for the table (derived columns added; for upserts, one change per key)
/// and the dead letters (but tombstones an upsert applied).
async fn rows(
    _p: &Pipeline,
    decoded: &Decoded,
    output: &Output,
    derive: &Derive,
) -> Result<(RecordBatch, RecordBatch)> {
    let rows = derive
        .apply(&decoded.rows)
        .map_err(crate::decode::DecodeError::from)?;
    Ok(match output {
        Output::Upsert(changes) => {
            let batch = changes.batch(&rows, &decoded.tombstones).await?;
            let dead = without(&decoded.dead_letters, &batch.tombstones)?;
            (batch.rows, dead)
        }
        _ => (rows, decoded.dead_letters.clone()),
    })
}

/// Commit the batch's dead letters (tagged with this pipeline); how many landed.
async fn commit_dead_letters(
    p: &Pipeline,
    dead: &mut DeltaSink,
    dead_letters: &RecordBatch,
    info: &BatchInfo,
) -> Result<usize> {
    if dead_letters.num_rows() == 0 {
        return Ok(0);
    }
    let tagged = crate::decode::for_pipeline(dead_letters, &p.spec.name)
        .map_err(crate::decode::DecodeError::from)?;
    let CommitOutcome::Committed { rows, .. } = dead.commit(&tagged, info, Write::Append).await?
    else {
        return Ok(0);
    };
    if rows > 0 {
        crate::failpoint::hit("after_dead_letters", &p.spec.name);
    }
    Ok(rows)
}

/// Count a committed (or already committed) batch of `table_rows` rows.
fn count(
    p: &Pipeline,
    ready: &Ready,
    outcome: &CommitOutcome,
    table_rows: usize,
    dead_rows: usize,
    conflicts: u64,
) {
    let m = &p.metrics;
    let c = &m.counters;
    c.commit_conflicts.inc_by(conflicts);
    m.committed(ready.opened_at);
    c.batches.inc_by(1);
    c.records.inc_by(ready.records as u64);
    c.bytes.inc_by(ready.bytes as u64);
    c.dead_letters.inc_by(dead_rows as u64);
    match *outcome {
        CommitOutcome::Committed {
            version,
            rows,
            input_rows,
            late_rows,
            state_rows,
            watermark,
            ..
        } => {
            c.rows.inc_by(rows as u64);
            c.skipped
                .inc_by(table_rows.saturating_sub(input_rows) as u64);
            c.late_rows.inc_by(late_rows);
            m.state_rows.set(state_rows as i64);
            if let Some(w) = watermark {
                m.watermark.store(w, Ordering::Relaxed);
            }
            crate::metrics::set_table_version(&p.spec.table, version);
        }
        CommitOutcome::AlreadyCommitted => {
            c.skipped.inc_by(table_rows as u64);
            let records = ready.records;
            info!(pipeline = %p.spec.name, records, "batch already in the table, skipped");
        }
    }
}

/// Dead letters but those of the tombstones `applied` (partition, offset).
fn without(
    dead: &RecordBatch,
    applied: &HashSet<(i32, i64)>,
) -> std::result::Result<RecordBatch, crate::decode::DecodeError> {
    if applied.is_empty() {
        return Ok(dead.clone());
    }
    let partitions = dead
        .column_by_name(kafka_columns::PARTITION)
        .and_then(|c| c.as_primitive_opt::<Int32Type>());
    let offsets = dead
        .column_by_name(kafka_columns::OFFSET)
        .and_then(|c| c.as_primitive_opt::<Int64Type>());
    let (Some(partitions), Some(offsets)) = (partitions, offsets) else {
        return Ok(dead.clone());
    };
    let keep: BooleanArray = partitions
        .values()
        .iter()
        .zip(offsets.values())
        .map(|(&p, &o)| Some(!applied.contains(&(p, o))))
        .collect();
    Ok(filter_record_batch(dead, &keep)?)
}

/// Partitions with records left to read beyond what the consumer had reached.
fn behind(high: &HashMap<i32, i64>, positions: &HashMap<i32, i64>) -> HashSet<i32> {
    positions
        .iter()
        .filter(|(p, pos)| high.get(p).is_some_and(|h| h > pos))
        .map(|(p, _)| *p)
        .collect()
}
