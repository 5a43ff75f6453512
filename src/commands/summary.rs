//! The summary `run` prints when it ends.

use crate::cli::SummaryFormat;
use crate::metrics::Snapshot;

/// The summary `run` prints on exit.
pub fn print_summary(summaries: &[Snapshot], format: SummaryFormat) {
    for s in summaries {
        match format {
            SummaryFormat::Json => match serde_json::to_string(s) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("cannot print summary: {e}"),
            },
            SummaryFormat::Text => {
                let c = &s.counters;
                println!(
                "pipeline {:<12} table {:<12} version {:>5}  batches {:>6}  records {:>9}  rows {:>9}  dead letters {:>6}  already committed {:>7}  {:>8.0} records/s  {:>6.1} MB/s  ({:.1}s)",
                s.pipeline,
                s.table,
                s.table_version,
                c.batches,
                c.records,
                c.rows,
                c.dead_letters,
                c.skipped,
                s.records_per_second(),
                s.megabytes_per_second(),
                s.seconds
            )
            }
        }
    }
}
