//! Compaction's and vacuum's settings for one table, from the plan (and what a command
//! line overrides).

use std::time::Duration;

use super::{CompactOptions, VacuumOptions};
use crate::config::Plan;

/// Compaction settings of `table` from the config (`zorder_by` overrides the table's).
pub fn compact_options(
    config: &Plan,
    table: &str,
    zorder_by: Option<Vec<String>>,
) -> CompactOptions {
    let m = &config.maintenance;
    let no_dictionary = config
        .pipelines
        .values()
        .find(|p| p.table == table)
        .map(|p| p.no_dictionary())
        .unwrap_or_default();
    CompactOptions {
        target_file_size: m.compact.target_file_size,
        min_small_files: m.compact.min_small_files,
        zorder_by: zorder_by.unwrap_or_else(|| m.table(table).zorder_by),
        max_retries: m.compact.max_retries,
        writer_properties: crate::sink::writer_properties(
            config.storage.zstd_level,
            &no_dictionary,
        ),
    }
}

/// Vacuum settings from the config; `retention` overrides the configured one.
pub fn vacuum_options(
    config: &Plan,
    retention: Option<Duration>,
    force: bool,
    dry_run: bool,
) -> VacuumOptions {
    let v = &config.maintenance.vacuum;
    VacuumOptions {
        retention: retention.unwrap_or(v.retention),
        min_retention: v.min_retention,
        force,
        dry_run,
        max_retries: config.maintenance.compact.max_retries,
    }
}
