//! One batch's commit: dead letters, then the rows through the pipeline's output, then
//! the counters and the progress record.

use super::*;

impl Pipeline {
    /// Dead letters first, then the rows: the consumer resumes from the row table's
    /// offsets, so a crash between the two replays the batch and the dead-letter table
    /// skips what it already holds.
    pub(super) async fn commit(
        &self,
        ready: Ready,
        (table, dead): (&mut DeltaSink, &mut DeltaSink),
        feed: &Feed,
        (output, derive): (&mut Output, &Derive),
        opts: RunOptions,
    ) -> Result<()> {
        let source = &feed.source;
        let Ready {
            opened_at,
            fetch_ms,
            decode_ms,
            ranges,
            positions,
            records,
            bytes,
            produced,
            topic_id,
            decoded,
        } = ready;
        if records == 0 {
            return Ok(()); // positions only: the consumer reached the end of partitions
        }
        if let Output::Query(engine) = output {
            engine.set_behind(behind(&source.high_watermarks(), &positions));
        }
        let info = BatchInfo {
            ranges: ranges.clone(),
            with_batch_id: false,
            topic_id,
        };
        let rows = derive
            .apply(&decoded.rows)
            .map_err(crate::decode::DecodeError::from)?;
        let (batch_rows, dead_letters) = match output {
            Output::Upsert(changes) => {
                let batch = changes.batch(&rows, &decoded.tombstones).await?;
                let dead = without(&decoded.dead_letters, &batch.tombstones)?;
                (batch.rows, dead)
            }
            _ => (rows, decoded.dead_letters),
        };
        let mut dead_rows = 0;
        if dead_letters.num_rows() > 0 {
            let dead_letters = crate::decode::for_pipeline(&dead_letters, &self.spec.name)
                .map_err(crate::decode::DecodeError::from)?;
            if let CommitOutcome::Committed { rows, .. } =
                dead.commit(&dead_letters, &info, Write::Append).await?
            {
                dead_rows = rows;
            }
        }
        if dead_rows > 0 {
            crate::failpoint::hit("after_dead_letters", &self.spec.name);
        }
        let info = BatchInfo {
            with_batch_id: true,
            ..info
        };
        let outcome = table.commit(&batch_rows, &info, output.write()).await?;
        if matches!(outcome, CommitOutcome::Committed { .. }) {
            crate::failpoint::hit("after_commit", &self.spec.name);
        }
        feed.group.committed(feed.slot, &ranges);

        let m = &self.metrics;
        m.conflicts
            .inc_by(table.timings().conflicts + dead.timings().conflicts);
        m.committed(opened_at);
        m.batches.inc_by(1);
        m.records.inc_by(records as u64);
        m.bytes.inc_by(bytes as u64);
        m.dead_letters.inc_by(dead_rows as u64);
        match outcome {
            CommitOutcome::Committed {
                version,
                rows,
                input_rows,
                late_rows,
                state_rows,
                watermark,
                ..
            } => {
                m.rows.inc_by(rows as u64);
                m.skipped
                    .inc_by(batch_rows.num_rows().saturating_sub(input_rows) as u64);
                m.late_rows.inc_by(late_rows);
                m.state_rows.set(state_rows as i64);
                if let Some(w) = watermark {
                    m.watermark.store(w, Ordering::Relaxed);
                }
                m.table_version.store(version, Ordering::Relaxed);
            }
            CommitOutcome::AlreadyCommitted => {
                m.skipped.inc_by(batch_rows.num_rows() as u64);
                info!(pipeline = %self.spec.name, records, "batch already in the table, skipped");
            }
        }
        let batch = BatchReport {
            opened_at,
            fetch_ms,
            decode_ms,
            records,
            dead_letters: dead_rows,
            ranges: &ranges,
            produced,
        };
        let progress = self.progress(&batch, &outcome, table, source);
        if opts.progress_json {
            eprintln!("{}", serde_json::to_string(&progress).unwrap_or_default());
        } else {
            info!(pipeline = %self.spec.name, "{}", progress.line());
        }
        m.record(progress);
        Ok(())
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
        .column_by_name("kafka_partition")
        .and_then(|c| c.as_primitive_opt::<Int32Type>());
    let offsets = dead
        .column_by_name("kafka_offset")
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
