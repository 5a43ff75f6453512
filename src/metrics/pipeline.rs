//! One pipeline's handles into the registry, plus what only the status page shows: its
//! state, recent progress records, the lag, the run summary.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::{
    format_micros, metrics, table_version, CounterValues, Counters, PartitionLabels, PipelineLabel,
    Progress,
};

/// Progress records kept per pipeline for the status page.
pub const RECENT_PROGRESS: usize = 300;
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

/// One pipeline's handles into the registry, plus what only the status page shows.
#[derive(Debug)]
pub struct PipelineMetrics {
    name: String,
    pub started: Instant,
    /// Everything counted (see `registry::pipeline_counters!`).
    pub counters: Counters,
    /// Stateful pipelines: open state rows.
    pub state_rows: Gauge,
    up: Gauge,
    durations: Histogram,
    /// Watermark (µs, or MIN: none yet).
    pub watermark: AtomicI64,
    /// When the first record of the run arrived, and when the last batch was committed:
    /// throughput is measured between the two, not over group-join time.
    pub first_record: OnceLock<Instant>,
    pub last_commit: Mutex<Option<Instant>>,
    pub run_id: String,
    pub state: Mutex<PipelineState>,
    /// The last progress records, oldest first.
    pub recent: Mutex<VecDeque<Progress>>,
    /// Next offset to commit, by partition (after this run's batches).
    positions: Mutex<BTreeMap<i32, i64>>,
    /// Latest offsets the broker reported for the partitions this process reads.
    high: Mutex<BTreeMap<i32, i64>>,
    /// When the previous batch's first record arrived (input rate = rows / gap).
    previous_batch: Mutex<Option<Instant>>,
}

impl PipelineMetrics {
    /// The handles of pipeline `name` (a second call shares the same values).
    pub fn new(name: &str) -> Self {
        let m = metrics();
        let label = PipelineLabel {
            pipeline: name.to_string(),
        };
        Self {
            name: name.to_string(),
            started: Instant::now(),
            counters: m.pipeline_counters.of(&label),
            state_rows: m.state_rows.get_or_create(&label).clone(),
            up: m.pipeline_up.get_or_create(&label).clone(),
            durations: m.batch_duration.get_or_create(&label).clone(),
            watermark: AtomicI64::new(i64::MIN),
            first_record: OnceLock::new(),
            last_commit: Mutex::new(None),
            run_id: uuid::Uuid::new_v4().to_string(),
            state: Mutex::new(PipelineState::Starting),
            recent: Mutex::new(VecDeque::new()),
            positions: Mutex::new(BTreeMap::new()),
            high: Mutex::new(BTreeMap::new()),
            previous_batch: Mutex::new(None),
        }
    }
}

/// A point-in-time copy of [`PipelineMetrics`].
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub pipeline: String,
    pub table: String,
    #[serde(flatten)]
    pub counters: CounterValues,
    pub table_version: i64,
    pub state_rows: u64,
    /// Watermark as RFC 3339 (stateful pipelines that have one).
    pub watermark: Option<String>,
    /// Since the pipeline started.
    pub seconds: f64,
    /// From the first record read to the last batch committed.
    pub active_seconds: f64,
}

impl PipelineMetrics {
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
        self.up.set(i64::from(state == PipelineState::Running));
        *lock(&self.state) = state;
    }

    pub fn state(&self) -> PipelineState {
        *lock(&self.state)
    }

    /// Keep `progress` (the last [`RECENT_PROGRESS`]) and fold it into the histogram and
    /// the positions.
    pub fn record(&self, progress: Progress) {
        self.durations
            .observe(progress.duration_ms.total as f64 / 1000.0);
        let mut positions = lock(&self.positions);
        for s in &progress.sources {
            positions.extend(s.end_offset.iter().map(|(&p, &last)| (p, last + 1)));
        }
        drop(positions);
        self.export_lag();
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT_PROGRESS {
            recent.pop_front();
        }
        recent.push_back(progress);
    }

    pub fn recent(&self) -> Vec<Progress> {
        lock(&self.recent).iter().cloned().collect()
    }

    /// The broker's latest offsets (kept fresh while the pipeline runs).
    pub fn set_high_watermarks(&self, high: impl IntoIterator<Item = (i32, i64)>) {
        *lock(&self.high) = high.into_iter().collect();
        self.export_lag();
    }

    fn export_lag(&self) {
        let family = &metrics().consumer_lag;
        for (partition, lag) in self.lag() {
            let labels = PartitionLabels {
                pipeline: self.name.clone(),
                partition,
            };
            family.get_or_create(&labels).set(lag);
        }
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
        let last = *lock(&self.last_commit);
        let active = match (self.first_record.get(), last) {
            (Some(first), Some(last)) => last.saturating_duration_since(*first).as_secs_f64(),
            _ => 0.0,
        };
        Snapshot {
            pipeline: pipeline.to_string(),
            table: table.to_string(),
            counters: self.counters.values(),
            table_version: table_version(table).unwrap_or(-1),
            state_rows: self.state_rows.get().max(0) as u64,
            watermark: format_micros(self.watermark.load(Ordering::Relaxed)),
            seconds: self.started.elapsed().as_secs_f64(),
            active_seconds: active,
        }
    }
}

impl Snapshot {
    pub fn records_per_second(&self) -> f64 {
        self.counters.records as f64 / self.active_seconds.max(1e-9)
    }

    pub fn megabytes_per_second(&self) -> f64 {
        self.counters.bytes as f64 / 1e6 / self.active_seconds.max(1e-9)
    }
}
