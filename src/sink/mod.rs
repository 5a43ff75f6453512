//! Delta sink: data files plus `txn` offsets in one atomic commit per micro-batch.
//!
//! Exactly once rests on three rules:
//! 1. every commit carries, per Kafka partition, a `txn` action whose version is the last
//!    offset the table now holds (app id `lakestream.<pipeline>.<topic>.<partition>`);
//! 2. before committing, rows at or below the table's recorded offset are dropped, so a
//!    replayed or concurrently processed batch adds nothing twice;
//! 3. a commit is tried only against the latest version we checked (no blind retries in
//!    delta-rs): on any conflict or doubtful failure we re-read the table and start over
//!    from rule 2, which also tells whether a "failed" commit had in fact landed.

mod checkpoint;
mod commit;
mod contention;
mod entry;
mod offsets;
mod probe;
mod state;
mod table;
mod txn;

pub use checkpoint::checkpoint;
pub use commit::{BatchInfo, CommitOutcome, CommitTimings, DeltaSink, SinkOptions, Write};
pub use contention::Contention;
pub use entry::{latest_watermark, CommitEntry, StateEntry};
pub use offsets::{last_topic, read_committed, record_offsets, Held, Ownership};
pub use probe::{check_conditional_put, check_storage};
pub(crate) use table::{add_rows, commit_actions};
pub use table::{open_or_create, writer_properties};

use deltalake::DeltaTableError;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("table '{table}'")]
    Delta {
        table: String,
        #[source]
        cause: Box<DeltaTableError>,
    },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("table '{table}': schema mismatch: {message}")]
    Schema { table: String, message: String },
    #[error("table '{table}': commit kept failing for {seconds}s, last error")]
    GaveUp {
        table: String,
        seconds: u64,
        #[source]
        cause: Box<DeltaTableError>,
    },
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("table '{table}': {message}")]
    StateMissing { table: String, message: String },
    #[error("table '{table}' belongs to another pipeline or topic: {message}")]
    Owner { table: String, message: String },
    #[error(
        "table '{table}': shutdown while a commit was failing ({cause}); the batch was \
         abandoned whole and is read again on restart"
    )]
    Abandoned {
        table: String,
        #[source]
        cause: Box<DeltaTableError>,
    },
}

impl SinkError {
    pub(crate) fn delta(table: &str, cause: DeltaTableError) -> Self {
        Self::Delta {
            table: table.to_string(),
            cause: Box::new(cause),
        }
    }
}
