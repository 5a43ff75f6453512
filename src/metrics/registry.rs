//! The one place every metric of the process lives. Tasks hold handles into these
//! families (cloning a handle shares its value); `/metrics` encodes the registry, and
//! `/status`, the status page and the run summary read the same handles.

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (s) of the batch-duration histogram buckets.
const DURATION_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabel {
    pub pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub pipeline: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

/// `task`: compact or vacuum; `result`: ok, skipped (nothing to do) or failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub task: String,
    pub result: String,
}

/// `kind` is a module path of two segments, so the label set stays bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogLabels {
    pub level: String,
    pub kind: String,
}

type ByPipeline = Family<PipelineLabel, Counter>;
type DurationFamily = Family<PipelineLabel, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub batches: ByPipeline,
    pub input_records: ByPipeline,
    pub input_bytes: ByPipeline,
    pub output_rows: ByPipeline,
    pub dead_letters: ByPipeline,
    pub replayed_rows: ByPipeline,
    pub late_rows: ByPipeline,
    pub data_loss_events: ByPipeline,
    pub refused_topics: ByPipeline,
    pub commit_conflicts: ByPipeline,
    pub state_rows: Family<PipelineLabel, Gauge>,
    pub pipeline_up: Family<PipelineLabel, Gauge>,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    pub batch_duration: DurationFamily,
    pub table_version: Family<TableLabel, Gauge>,
    pub table_files: Family<TableLabel, Gauge>,
    pub sync_passes: Counter,
    pub sync_rows: Counter,
    pub sync_errors: Counter,
    pub sync_table_failing: Family<TableLabel, Gauge>,
    pub sync_versions_behind: Family<TableLabel, Gauge>,
    pub sync_seconds_behind: Gauge<f64, AtomicU64>,
    pub maintenance_runs: Family<TaskLabels, Counter>,
    pub vacuum_files_deleted: Counter,
    pub log_events: Family<LogLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    fn new() -> Self {
        let m = Self {
            registry: Registry::default(),
            batches: Default::default(),
            input_records: Default::default(),
            input_bytes: Default::default(),
            output_rows: Default::default(),
            dead_letters: Default::default(),
            replayed_rows: Default::default(),
            late_rows: Default::default(),
            data_loss_events: Default::default(),
            refused_topics: Default::default(),
            commit_conflicts: Default::default(),
            state_rows: Default::default(),
            pipeline_up: Default::default(),
            consumer_lag: Default::default(),
            batch_duration: Family::new_with_constructor(duration_histogram),
            table_version: Default::default(),
            table_files: Default::default(),
            sync_passes: Default::default(),
            sync_rows: Default::default(),
            sync_errors: Default::default(),
            sync_table_failing: Default::default(),
            sync_versions_behind: Default::default(),
            sync_seconds_behind: Default::default(),
            maintenance_runs: Default::default(),
            vacuum_files_deleted: Default::default(),
            log_events: Default::default(),
        };
        let mut r = Registry::with_prefix("lakestream");
        // Counters get their `_total` suffix from the encoder.
        r.register("batches", "Micro-batches committed", m.batches.clone());
        r.register(
            "input_records",
            "Kafka records consumed and committed",
            m.input_records.clone(),
        );
        r.register(
            "input_bytes",
            "Kafka payload bytes consumed and committed",
            m.input_bytes.clone(),
        );
        r.register(
            "output_rows",
            "Rows written to the output table",
            m.output_rows.clone(),
        );
        r.register(
            "dead_letters",
            "Records written to the dead-letter table",
            m.dead_letters.clone(),
        );
        r.register(
            "replayed_rows",
            "Rows of replayed batches dropped because the table already held them",
            m.replayed_rows.clone(),
        );
        r.register(
            "late_rows",
            "Rows dropped behind the watermark",
            m.late_rows.clone(),
        );
        r.register(
            "data_loss_events",
            "Times records were found lost before ingestion (retention, recreated topic)",
            m.data_loss_events.clone(),
        );
        r.register(
            "refused_topics",
            "Topics the source matched but the pipeline does not read: their per-topic table is another topic's",
            m.refused_topics.clone(),
        );
        r.register(
            "commit_conflicts",
            "Commit attempts redone because another writer committed first",
            m.commit_conflicts.clone(),
        );
        r.register(
            "state_rows",
            "Open aggregate rows held in state",
            m.state_rows.clone(),
        );
        r.register(
            "pipeline_up",
            "1 while the pipeline runs",
            m.pipeline_up.clone(),
        );
        r.register(
            "consumer_lag_records",
            "Records behind the partition's latest offset",
            m.consumer_lag.clone(),
        );
        r.register(
            "batch_duration_seconds",
            "First record of a micro-batch to its commit",
            m.batch_duration.clone(),
        );
        r.register(
            "table_version",
            "Latest Delta version of the table",
            m.table_version.clone(),
        );
        r.register(
            "table_files",
            "Live data files of the table",
            m.table_files.clone(),
        );
        r.register(
            "mysql_sync_passes",
            "Sync passes that reached every table",
            m.sync_passes.clone(),
        );
        r.register(
            "mysql_sync_rows",
            "Rows written to MySQL",
            m.sync_rows.clone(),
        );
        r.register(
            "mysql_sync_errors",
            "Failed table syncs and lost connections",
            m.sync_errors.clone(),
        );
        r.register(
            "mysql_sync_table_failing",
            "1 while the last sync of the table failed (the other tables go on)",
            m.sync_table_failing.clone(),
        );
        r.register(
            "mysql_sync_versions_behind",
            "Delta versions the MySQL mirror of the table is behind",
            m.sync_versions_behind.clone(),
        );
        r.register(
            "mysql_sync_seconds_behind",
            "Seconds since the mirror last reached every table",
            m.sync_seconds_behind.clone(),
        );
        r.register(
            "maintenance_runs",
            "Scheduled maintenance runs by task and result",
            m.maintenance_runs.clone(),
        );
        r.register(
            "vacuum_files_deleted",
            "Files deleted by vacuum",
            m.vacuum_files_deleted.clone(),
        );
        r.register(
            "log_events",
            "Warnings and errors logged, by level and module",
            m.log_events.clone(),
        );
        Self { registry: r, ..m }
    }

    /// The whole registry in the OpenMetrics text format (what Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Count a scheduled maintenance run.
    pub fn maintenance_run(&self, task: &str, result: &str) {
        self.maintenance_runs
            .get_or_create(&TaskLabels {
                task: task.to_string(),
                result: result.to_string(),
            })
            .inc();
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{PipelineMetrics, PipelineState};

    /// A pipeline's handles are the registry's values: moving one shows in `/metrics`.
    #[test]
    fn handles_share_values_with_the_registry() {
        let m = PipelineMetrics::new("unit_registry");
        m.conflicts.inc_by(3);
        m.data_loss_events.inc();
        m.skipped.inc_by(7);
        m.set_state(PipelineState::Running);
        let text = metrics().encode();
        for line in [
            "lakestream_commit_conflicts_total{pipeline=\"unit_registry\"} 3",
            "lakestream_data_loss_events_total{pipeline=\"unit_registry\"} 1",
            "lakestream_replayed_rows_total{pipeline=\"unit_registry\"} 7",
            "lakestream_pipeline_up{pipeline=\"unit_registry\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(m.snapshot("unit_registry", "t").conflicts, 3);
    }
}
