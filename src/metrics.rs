//! Counters a pipeline keeps while it runs, read for progress lines and the summary.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

#[derive(Debug)]
pub struct PipelineMetrics {
    pub started: Instant,
    pub batches: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub rows: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Rows of replayed batches that the table already held.
    pub skipped: AtomicU64,
    pub table_version: AtomicI64,
    /// Stateful pipelines: rows dropped as late, open state rows, watermark (µs, or MIN).
    pub late_rows: AtomicU64,
    pub state_rows: AtomicU64,
    pub watermark: AtomicI64,
    /// When the first record of the run arrived, and when the last batch was committed:
    /// throughput is measured between the two, not over group-join time.
    pub first_record: OnceLock<Instant>,
    pub last_commit: Mutex<Option<Instant>>,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            batches: AtomicU64::new(0),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            table_version: AtomicI64::new(-1),
            late_rows: AtomicU64::new(0),
            state_rows: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            first_record: OnceLock::new(),
            last_commit: Mutex::new(None),
        }
    }
}

/// A point-in-time copy of [`PipelineMetrics`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub pipeline: String,
    pub table: String,
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
    pub rows: u64,
    pub dead_letters: u64,
    pub skipped: u64,
    pub table_version: i64,
    pub late_rows: u64,
    pub state_rows: u64,
    /// Watermark as RFC 3339 (stateful pipelines that have one).
    pub watermark: Option<String>,
    /// Since the pipeline started.
    pub seconds: f64,
    /// From the first record read to the last batch committed.
    pub active_seconds: f64,
}

impl PipelineMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn committed(&self, batch_opened: Option<Instant>) {
        if let Some(t) = batch_opened {
            self.first_record.get_or_init(|| t);
        }
        *self.last_commit.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    pub fn snapshot(&self, pipeline: &str, table: &str) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let last = *self.last_commit.lock().unwrap_or_else(|e| e.into_inner());
        let active = match (self.first_record.get(), last) {
            (Some(first), Some(last)) => last.saturating_duration_since(*first).as_secs_f64(),
            _ => 0.0,
        };
        Snapshot {
            pipeline: pipeline.to_string(),
            table: table.to_string(),
            batches: get(&self.batches),
            records: get(&self.records),
            bytes: get(&self.bytes),
            rows: get(&self.rows),
            dead_letters: get(&self.dead_letters),
            skipped: get(&self.skipped),
            table_version: self.table_version.load(Ordering::Relaxed),
            late_rows: get(&self.late_rows),
            state_rows: get(&self.state_rows),
            watermark: format_micros(self.watermark.load(Ordering::Relaxed)),
            seconds: self.started.elapsed().as_secs_f64(),
            active_seconds: active,
        }
    }
}

impl Snapshot {
    pub fn records_per_second(&self) -> f64 {
        self.records as f64 / self.active_seconds.max(1e-9)
    }

    pub fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.active_seconds.max(1e-9)
    }
}

/// A timestamp in µs as RFC 3339 (`None` for `i64::MIN`, "not set").
pub fn format_micros(us: i64) -> Option<String> {
    if us == i64::MIN {
        return None;
    }
    chrono::DateTime::from_timestamp_micros(us).map(|t| t.to_rfc3339())
}
