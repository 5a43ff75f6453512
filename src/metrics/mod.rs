//! Counters a pipeline keeps while it runs, read for progress lines, the summary, the
//! status page and `/metrics`.

mod errors;
mod progress;

pub use errors::{recent_errors, ErrorEntry, ErrorLayer};
pub use progress::{Durations, EventTime, Progress, SinkProgress, SourceProgress};

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Progress records kept per pipeline for the status page.
pub const RECENT_PROGRESS: usize = 300;
/// Upper bounds (ms) of the batch-duration histogram buckets.
pub const DURATION_BUCKETS_MS: [u64; 10] =
    [50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000];

/// A Prometheus-style histogram: cumulative bucket counts, sum and count.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    pub buckets: [u64; DURATION_BUCKETS_MS.len()],
    pub sum_ms: u64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, ms: u64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(DURATION_BUCKETS_MS) {
            if ms <= bound {
                *bucket += 1;
            }
        }
        self.sum_ms += ms;
        self.count += 1;
    }
}

/// What a pipeline is doing, for the status page and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    Starting,
    Running,
    Stopped,
    Failed,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
    /// Records found lost (deleted or recreated under us), shared with the consumer.
    pub data_loss_events: std::sync::Arc<AtomicU64>,
    /// Commit attempts lost to another writer.
    pub conflicts: AtomicU64,
    /// When the first record of the run arrived, and when the last batch was committed:
    /// throughput is measured between the two, not over group-join time.
    pub first_record: OnceLock<Instant>,
    pub last_commit: Mutex<Option<Instant>>,
    pub run_id: String,
    pub state: Mutex<PipelineState>,
    /// The last progress records, oldest first.
    pub recent: Mutex<VecDeque<Progress>>,
    /// Batch durations (first record to committed).
    pub durations: Mutex<Histogram>,
    /// Next offset to commit, by partition (after this run's batches).
    positions: Mutex<BTreeMap<i32, i64>>,
    /// Latest offsets the broker reported for the partitions this process reads.
    high: Mutex<BTreeMap<i32, i64>>,
    /// When the previous batch's first record arrived (input rate = rows / gap).
    previous_batch: Mutex<Option<Instant>>,
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
            data_loss_events: Default::default(),
            conflicts: AtomicU64::new(0),
            first_record: OnceLock::new(),
            last_commit: Mutex::new(None),
            run_id: uuid::Uuid::new_v4().to_string(),
            state: Mutex::new(PipelineState::Starting),
            recent: Mutex::new(VecDeque::new()),
            durations: Mutex::new(Histogram::default()),
            positions: Mutex::new(BTreeMap::new()),
            high: Mutex::new(BTreeMap::new()),
            previous_batch: Mutex::new(None),
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
    pub data_loss_events: u64,
    pub conflicts: u64,
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
        *lock(&self.last_commit) = Some(Instant::now());
    }

    /// The previous batch's start, replaced by `opened`.
    pub fn previous_batch(&self, opened: Instant) -> Option<Instant> {
        lock(&self.previous_batch).replace(opened)
    }

    pub fn set_state(&self, state: PipelineState) {
        *lock(&self.state) = state;
    }

    pub fn state(&self) -> PipelineState {
        *lock(&self.state)
    }

    /// Keep `progress` (the last [`RECENT_PROGRESS`]) and fold it into the histogram and
    /// the positions.
    pub fn record(&self, progress: Progress) {
        lock(&self.durations).observe(progress.duration_ms.total);
        let mut positions = lock(&self.positions);
        for s in &progress.sources {
            positions.extend(s.end_offset.iter().map(|(&p, &last)| (p, last + 1)));
        }
        drop(positions);
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT_PROGRESS {
            recent.pop_front();
        }
        recent.push_back(progress);
    }

    pub fn recent(&self) -> Vec<Progress> {
        lock(&self.recent).iter().cloned().collect()
    }

    pub fn histogram(&self) -> Histogram {
        lock(&self.durations).clone()
    }

    /// The broker's latest offsets (kept fresh while the pipeline runs).
    pub fn set_high_watermarks(&self, high: impl IntoIterator<Item = (i32, i64)>) {
        *lock(&self.high) = high.into_iter().collect();
    }

    /// Records behind the latest offset, by partition this process reads and has
    /// committed in this run.
    pub fn lag(&self) -> BTreeMap<i32, i64> {
        let high = lock(&self.high);
        lock(&self.positions)
            .iter()
            .filter_map(|(p, pos)| Some((*p, (high.get(p)? - pos).max(0))))
            .collect()
    }

    pub fn snapshot(&self, pipeline: &str, table: &str) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let last = *lock(&self.last_commit);
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
            data_loss_events: get(&self.data_loss_events),
            conflicts: get(&self.conflicts),
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
