//! The progress record of each committed batch (Spark's StreamingQueryProgress fields).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::task::Pipeline;
use crate::metrics::{Durations, EventTime, Latency, Progress, SinkProgress, SourceProgress};
use crate::sink::{CommitOutcome, DeltaSink};
use crate::source::{OffsetRange, ProducedAt, SourceHandle};

/// What the progress record needs to know about a batch besides the commit outcome.
pub(super) struct BatchReport<'a> {
    pub opened_at: Option<Instant>,
    pub fetch_ms: u64,
    pub decode_ms: u64,
    pub records: usize,
    pub dead_letters: usize,
    pub ranges: &'a BTreeMap<i32, OffsetRange>,
    pub produced: Option<ProducedAt>,
}

/// The progress record of a committed (or skipped) batch.
pub(super) fn progress(
    p: &Pipeline,
    batch: &BatchReport<'_>,
    outcome: &CommitOutcome,
    table: &DeltaSink,
    source: &SourceHandle,
) -> Progress {
    let m = &p.metrics;
    let now = Instant::now();
    let opened = batch.opened_at.unwrap_or(now);
    let total = now.saturating_duration_since(opened);
    let previous = m.previous_batch(opened);
    let since_previous = previous.map_or(total, |p| opened.saturating_duration_since(p));
    let per_second = |secs: f64| batch.records as f64 / secs.max(1e-3);
    let timings = table.timings();
    let (version, batch_id, late, state_rows) = match outcome {
        CommitOutcome::Committed {
            version,
            batch_id,
            late_rows,
            state_rows,
            ..
        } => (
            Some(*version),
            batch_id.unwrap_or(-1),
            *late_rows,
            *state_rows as u64,
        ),
        CommitOutcome::AlreadyCommitted => (None, -1, 0, 0),
    };
    let started = chrono::Utc::now() - chrono::Duration::from_std(total).unwrap_or_default();
    Progress {
        name: p.spec.name.clone(),
        run_id: m.run_id.clone(),
        batch_id,
        timestamp: started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        num_input_rows: batch.records as u64,
        input_rows_per_second: per_second(since_previous.as_secs_f64()),
        processed_rows_per_second: per_second(total.as_secs_f64()),
        duration_ms: Durations {
            fetch: batch.fetch_ms,
            decode: batch.decode_ms,
            query: timings.query_ms,
            write: timings.write_ms,
            commit: timings.commit_ms,
            total: total.as_millis() as u64,
        },
        sources: vec![source_progress(batch, source)],
        event_time: EventTime {
            watermark: crate::metrics::format_micros(m.watermark.load(Ordering::Relaxed)),
        },
        latency_ms: batch.produced.map(|at| {
            let now = chrono::Utc::now().timestamp_millis();
            let since = |t: i64| (now - t).max(0) as u64;
            Latency {
                p50: since(at.p50),
                p99: since(at.p01),
                max: since(at.oldest),
            }
        }),
        state_rows,
        late_rows_dropped: late,
        dead_letters: batch.dead_letters as u64,
        sink: SinkProgress {
            description: format!("DeltaSink[{}]", table.name()),
            table: table.name().to_string(),
            version,
        },
    }
}

/// Where the batch read each partition from and to, and how far behind it was.
fn source_progress(batch: &BatchReport<'_>, source: &SourceHandle) -> SourceProgress {
    let latest = source.high_watermarks();
    SourceProgress {
        description: format!("KafkaSource[{}]", source.topic()),
        start_offset: batch.ranges.iter().map(|(&p, r)| (p, r.first)).collect(),
        end_offset: batch.ranges.iter().map(|(&p, r)| (p, r.last)).collect(),
        lag: batch
            .ranges
            .iter()
            .filter_map(|(p, r)| Some((*p, (latest.get(p)? - r.last - 1).max(0))))
            .collect(),
        latest_offset: latest.into_iter().collect(),
    }
}
