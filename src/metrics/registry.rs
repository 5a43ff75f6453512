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

type DurationFamily = Family<PipelineLabel, Histogram, fn() -> Histogram>;

/// Every counter a pipeline keeps, named once: its field (also its key in the summary
/// and `/status`, camelCased), its Prometheus name (`lakestream_<name>_total`) and help.
macro_rules! pipeline_counters {
    ($($field:ident => $name:literal, $help:literal;)*) => {
        /// One pipeline's counters (handles into the registry's families).
        #[derive(Debug, Clone)]
        pub struct Counters {
            $(pub $field: Counter,)*
        }

        /// The counters' values at one moment.
        #[derive(Debug, Clone, Copy, Default, serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        pub struct CounterValues {
            $(pub $field: u64,)*
        }

        /// The registry's families of pipeline counters, labelled by pipeline.
        #[derive(Default)]
        pub struct CounterFamilies {
            $($field: Family<PipelineLabel, Counter>,)*
        }

        impl CounterFamilies {
            fn register(&self, r: &mut Registry) {
                $(r.register($name, $help, self.$field.clone());)*
            }

            /// The handles of one pipeline (a second call shares the same values).
            pub fn of(&self, label: &PipelineLabel) -> Counters {
                Counters {
                    $($field: self.$field.get_or_create(label).clone(),)*
                }
            }
        }

        impl Counters {
            pub fn values(&self) -> CounterValues {
                CounterValues {
                    $($field: self.$field.get(),)*
                }
            }
        }
    };
}

pipeline_counters! {
    batches => "batches", "Micro-batches committed";
    records => "input_records", "Kafka records consumed and committed";
    bytes => "input_bytes", "Kafka payload bytes consumed and committed";
    rows => "output_rows", "Rows written to the output table";
    dead_letters => "dead_letters", "Records written to the dead-letter table";
    skipped => "replayed_rows", "Rows of replayed batches dropped because the table already held them";
    late_rows => "late_rows", "Rows dropped behind the watermark";
    data_loss_events => "data_loss_events", "Times records were found lost before ingestion (retention, recreated topic)";
    refused_topics => "refused_topics", "Topics the source matched but the pipeline does not read: their per-topic table is another topic's";
    commit_conflicts => "commit_conflicts", "Commit attempts redone because another writer committed first";
}

pub struct Metrics {
    registry: Registry,
    pub pipeline_counters: CounterFamilies,
    pub state_rows: Family<PipelineLabel, Gauge>,
    pub pipeline_up: Family<PipelineLabel, Gauge>,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    pub batch_duration: DurationFamily,
    pub table_version: Family<TableLabel, Gauge>,
    pub table_files: Family<TableLabel, Gauge>,
    pub catalog_failing: Family<TableLabel, Gauge>,
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
            pipeline_counters: Default::default(),
            state_rows: Default::default(),
            pipeline_up: Default::default(),
            consumer_lag: Default::default(),
            batch_duration: Family::new_with_constructor(duration_histogram),
            table_version: Default::default(),
            table_files: Default::default(),
            catalog_failing: Default::default(),
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
        m.register_pipelines(&mut r);
        m.register_services(&mut r);
        Self { registry: r, ..m }
    }

    /// Each pipeline's and table's metrics.
    fn register_pipelines(&self, r: &mut Registry) {
        self.pipeline_counters.register(r);
        r.register(
            "state_rows",
            "Open aggregate rows held in state",
            self.state_rows.clone(),
        );
        r.register(
            "pipeline_up",
            "1 while the pipeline runs",
            self.pipeline_up.clone(),
        );
        r.register(
            "consumer_lag_records",
            "Records behind the partition's latest offset",
            self.consumer_lag.clone(),
        );
        r.register(
            "batch_duration_seconds",
            "First record of a micro-batch to its commit",
            self.batch_duration.clone(),
        );
        r.register(
            "table_version",
            "Latest Delta version of the table",
            self.table_version.clone(),
        );
        r.register(
            "table_files",
            "Live data files of the table",
            self.table_files.clone(),
        );
        r.register(
            "catalog_registration_failing",
            "1 while the table's catalog entry cannot be created or updated (retried)",
            self.catalog_failing.clone(),
        );
    }

    /// The MySQL mirror's and maintenance's metrics, and the log's warnings.
    fn register_services(&self, r: &mut Registry) {
        r.register(
            "mysql_sync_passes",
            "Sync passes that reached every table",
            self.sync_passes.clone(),
        );
        r.register(
            "mysql_sync_rows",
            "Rows written to MySQL",
            self.sync_rows.clone(),
        );
        r.register(
            "mysql_sync_errors",
            "Failed table syncs and lost connections",
            self.sync_errors.clone(),
        );
        r.register(
            "mysql_sync_table_failing",
            "1 while the last sync of the table failed (the other tables go on)",
            self.sync_table_failing.clone(),
        );
        r.register(
            "mysql_sync_versions_behind",
            "Delta versions the MySQL mirror of the table is behind",
            self.sync_versions_behind.clone(),
        );
        r.register(
            "mysql_sync_seconds_behind",
            "Seconds since the mirror last reached every table",
            self.sync_seconds_behind.clone(),
        );
        r.register(
            "maintenance_runs",
            "Scheduled maintenance runs by task and result",
            self.maintenance_runs.clone(),
        );
        r.register(
            "vacuum_files_deleted",
            "Files deleted by vacuum",
            self.vacuum_files_deleted.clone(),
        );
        r.register(
            "log_events",
            "Warnings and errors logged, by level and module",
            self.log_events.clone(),
        );
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
        m.counters.commit_conflicts.inc_by(3);
        m.counters.data_loss_events.inc();
        m.counters.skipped.inc_by(7);
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
        let snapshot = m.snapshot("unit_registry", "t");
        assert_eq!(snapshot.counters.commit_conflicts, 3);
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["commitConflicts"], 3, "counters are flattened: {json}");
    }
}
