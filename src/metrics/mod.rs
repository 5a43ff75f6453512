//! Counters a pipeline keeps while it runs, read for progress lines, the summary, the
//! status page and `/metrics`. The values live in the process's one registry
//! ([`registry::metrics`]); this module holds a pipeline's handles into it.

mod errors;
mod pipeline;
mod progress;
mod registry;

pub use errors::{recent_errors, ErrorEntry, ErrorLayer};
pub use progress::{Durations, EventTime, Latency, Progress, SinkProgress, SourceProgress};
pub use registry::{
    metrics, CounterValues, Counters, Metrics, PartitionLabels, PipelineLabel, TableLabel,
    TaskLabels,
};

pub use pipeline::{PipelineMetrics, PipelineState, Snapshot, RECENT_PROGRESS};

/// The latest version of `table` this process saw (its commits, the status page's
/// refresher): the registry's `lakestream_table_version` is the one copy.
pub fn table_version(table: &str) -> Option<i64> {
    let label = TableLabel {
        table: table.to_string(),
    };
    metrics().table_version.get(&label).map(|g| g.get())
}

/// Record that `table` is at `version`.
pub fn set_table_version(table: &str, version: i64) {
    let label = TableLabel {
        table: table.to_string(),
    };
    metrics().table_version.get_or_create(&label).set(version);
}

/// `table`'s catalog entry is up to date.
pub fn catalog_registered(table: &str) {
    set_catalog_failing(table, 0);
}

/// `table`'s catalog entry could not be written (it is retried).
pub fn catalog_failed(table: &str) {
    set_catalog_failing(table, 1);
}

fn set_catalog_failing(table: &str, value: i64) {
    let label = TableLabel {
        table: table.to_string(),
    };
    metrics().catalog_failing.get_or_create(&label).set(value);
}

/// A timestamp in µs as RFC 3339 (`None` for `i64::MIN`, "not set").
pub fn format_micros(us: i64) -> Option<String> {
    if us == i64::MIN {
        return None;
    }
    chrono::DateTime::from_timestamp_micros(us).map(|t| t.to_rfc3339())
}
