//! Pipelines: consume -> decode -> commit, as stages that overlap, so batch N+1 is read
//! and decoded while batch N is written. The pipelines of one source share one reader
//! (one consumer, one decode, see `reader`); each commits to its own table.

mod budget;
mod catchup;
mod commit;
mod progress;
mod reader;
mod stages;
mod task;

pub use reader::{source_topics, start_source, Started};
pub use task::Pipeline;

/// How a run ends, and how it reports.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Stop once the table holds every partition of the topic up to its end at start.
    pub until_caught_up: bool,
    /// With `until_caught_up`: fail when not caught up this long after start.
    pub deadline: Option<std::time::Duration>,
    /// Progress records as JSON lines on stderr instead of a human log line.
    pub progress_json: bool,
    /// `run --reset-to`: rewind every partition to its first record at or after this
    /// time (ms since the epoch) before starting.
    pub reset_to: Option<i64>,
    /// How long the first signal's drain may take before the process exits anyway.
    pub drain_timeout: std::time::Duration,
}
