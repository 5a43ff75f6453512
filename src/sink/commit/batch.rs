//! What a commit is given and what it answers: the sink's options, how a batch changes
//! the table, the batch as the sink sees it, the outcome and where the time went.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deltalake::DeltaTableError;

use tokio_util::sync::CancellationToken;

use super::super::entry::StateEntry;
use crate::engine::{Engine, EngineError};
use crate::sink::Contention;
use crate::sink::SinkError;
use crate::source::OffsetRange;
use crate::storage::Storage;

/// What a sink needs to know besides its schema.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    pub storage: Storage,
    pub pipeline: String,
    pub topic: String,
    pub partition_by: Vec<String>,
    /// Keep Delta's change data feed (`delta.enableChangeDataFeed`) on a table created
    /// here: a MERGE then records the rows it changed, and the MySQL mirror reads only
    /// those.
    pub change_data_feed: bool,
    pub zstd_level: i32,
    pub target_file_size: u64,
    /// Columns written without dictionary encoding (near-unique values).
    pub no_dictionary: Vec<String>,
    pub retry_timeout: Duration,
    /// Checkpoint every this many versions (0: never) and drop log entries older than
    /// `log_retention` behind it.
    pub checkpoint_interval: u64,
    pub log_retention: Duration,
    /// Cancelled on shutdown: a commit that is backing off gives up instead of waiting.
    pub shutdown: CancellationToken,
    /// Where lost commits are reported, so maintenance yields to ingestion.
    pub contention: Contention,
}

/// How a batch changes the table: matched once from the pipeline's mode, so the sink
/// never guesses it from its settings.
pub enum Write<'a> {
    /// The rows are appended.
    Append,
    /// Each row is one change per key (`engine::Changes`), MERGEd by `keys`.
    Upsert { keys: &'a [String] },
    /// The rows go through the pipeline's query and state (`engine::Engine`).
    Query(&'a mut Engine),
}

/// One micro-batch as the sink sees it.
#[derive(Debug, Clone)]
pub struct BatchInfo {
    /// Offsets consumed per partition (the batch may hold fewer rows: dead letters).
    pub ranges: BTreeMap<i32, OffsetRange>,
    /// Record a batch id (a `txn` of its own) in this table.
    pub with_batch_id: bool,
    /// The id of the topic the batch was read from (`TopicId::fingerprint`), recorded
    /// beside each partition's offset; None where the broker keeps no topic ids.
    pub topic_id: Option<i64>,
    /// Per partition the consumer read, the last offset it had passed when the batch
    /// closed (its position - 1): every offset up to it is in this batch, an earlier
    /// one, or no record (a commit marker, an aborted or compacted-away record). The
    /// table records it, so it never resumes before offsets that are no records.
    pub through: BTreeMap<i32, i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed {
        version: i64,
        batch_id: Option<i64>,
        /// Rows written (for an aggregate: rows appended, merged or in the new result).
        rows: usize,
        /// Input rows of the batch the table did not hold yet.
        input_rows: usize,
        /// Stateful pipelines: rows dropped as late, open state rows, the watermark.
        late_rows: u64,
        state_rows: usize,
        watermark: Option<i64>,
    },
    /// Every offset of the batch was already in the table (a replay after a crash, or
    /// another process got there first).
    AlreadyCommitted,
}

/// Milliseconds a commit spent in the query, writing files and committing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitTimings {
    pub query_ms: u64,
    pub write_ms: u64,
    pub commit_ms: u64,
    /// Attempts lost to another writer's commit.
    pub conflicts: u64,
}

pub(super) fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// Why one commit attempt failed: storage and conflicts are retried, the rest is not.
pub(super) enum AttemptError {
    Delta(DeltaTableError),
    Engine(EngineError),
    Fatal(SinkError),
}

impl From<DeltaTableError> for AttemptError {
    fn from(e: DeltaTableError) -> Self {
        Self::Delta(e)
    }
}

impl From<deltalake::arrow::error::ArrowError> for AttemptError {
    fn from(e: deltalake::arrow::error::ArrowError) -> Self {
        Self::Delta(e.into())
    }
}

/// What a commit's entry holds beside the batch.
pub(super) enum Extra {
    Nothing,
    /// No records: positions past offsets that hold none.
    PositionsOnly,
    State(StateEntry),
}
