//! The exactly-once micro-batch commit (see the module docs of `sink`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::{DeltaTable, DeltaTableError};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod append;
mod merge;
mod replay;
mod stateful;
mod upsert;
mod winners;

use append::Written;
use replay::{drop_committed, new_ranges};

use super::state::{self, StateRef};
use super::table::{open_or_create, widen, widened_metadata, write_files, writer_properties};
use super::txn::{batch_app_id, offset_txns, topic_app_id, txn_app_id};
use super::SinkError;
use crate::engine::{Emit, Engine, EngineError, Shape, StreamState};
use crate::retry::{Backoff, Retry, RetryHint};
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
    pub contention: super::Contention,
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

/// A Delta table that micro-batches of one pipeline and topic are committed to.
pub struct DeltaSink {
    name: String,
    table: DeltaTable,
    opts: SinkOptions,
    props: WriterProperties,
    /// `txn` versions read from `table`'s current snapshot, by partition.
    committed: HashMap<i32, Option<i64>>,
    /// The topic id each partition's offset was recorded for, read likewise.
    stamps: HashMap<i32, Option<i64>>,
    /// Last batch id, read from the same snapshot (outer `None`: not read yet). Reading
    /// `txn` actions replays the log since the last checkpoint, so both are cached.
    last_batch_id: Option<Option<i64>>,
    /// A stateful pipeline's state and the snapshot the table named for it (`None`: no
    /// batch yet); `None` until loaded.
    stream: Option<(Option<StateRef>, StreamState)>,
    /// False after a refresh: `stream` must be checked against the table again.
    stream_checked: bool,
    /// Version of this sink's last commit (decides when a checkpoint is due).
    last_commit: Option<u64>,
    /// Where the last `commit` call spent its time (all attempts).
    timings: CommitTimings,
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

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// Why one commit attempt failed: storage and conflicts are retried, the rest is not.
enum AttemptError {
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

impl DeltaSink {
    pub async fn open(
        name: &str,
        schema: &SchemaRef,
        opts: SinkOptions,
    ) -> Result<Self, SinkError> {
        let table = open_or_create(
            &opts.storage,
            name,
            schema,
            &opts.partition_by,
            opts.change_data_feed,
        )
        .await?;
        Ok(Self {
            name: name.to_string(),
            table,
            props: writer_properties(opts.zstd_level, &opts.no_dictionary),
            opts,
            committed: HashMap::new(),
            stamps: HashMap::new(),
            last_batch_id: None,
            stream: None,
            stream_checked: false,
            last_commit: None,
            timings: CommitTimings::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's columns as Arrow sees them (None: no snapshot loaded).
    pub fn arrow_schema(&self) -> Option<SchemaRef> {
        Some(self.table.snapshot().ok()?.snapshot().arrow_schema())
    }

    pub fn version(&self) -> Option<i64> {
        self.table.version().map(|v| v as i64)
    }

    /// Refuse a table that another pipeline or topic wrote (see `offsets::check_owner`).
    pub async fn check_owner(
        &self,
        partitions: &[i32],
        ownership: super::Ownership,
    ) -> Result<(), SinkError> {
        super::offsets::check_owner(&self.table, &self.name, &self.opts, partitions, ownership)
            .await
    }

    /// Where the last `commit` spent its time.
    pub fn timings(&self) -> CommitTimings {
        self.timings
    }

    fn app_id(&self, partition: i32) -> String {
        txn_app_id(&self.opts.pipeline, &self.opts.topic, partition)
    }

    fn batch_app_id(&self) -> String {
        batch_app_id(&self.opts.pipeline)
    }

    fn err(&self, source: DeltaTableError) -> SinkError {
        SinkError::delta(&self.name, source)
    }

    async fn txn_version(&self, app_id: String) -> Result<Option<i64>, DeltaTableError> {
        let log_store = self.table.log_store();
        self.table
            .snapshot()?
            .transaction_version(log_store.as_ref(), app_id)
            .await
    }

    /// Last offset of `partition` the table holds, as of the loaded version.
    pub async fn committed_offset(&mut self, partition: i32) -> Result<Option<i64>, SinkError> {
        self.cached_offset(partition).await.map_err(|e| self.err(e))
    }

    async fn cached_offset(&mut self, partition: i32) -> Result<Option<i64>, DeltaTableError> {
        if let Some(v) = self.committed.get(&partition) {
            return Ok(*v);
        }
        let v = self.txn_version(self.app_id(partition)).await?;
        self.committed.insert(partition, v);
        Ok(v)
    }

    /// The last offset the table holds for each of `batch`'s partitions, as this sink
    /// last read or committed it.
    pub fn held(&self, batch: &BatchInfo) -> BTreeMap<i32, i64> {
        batch
            .ranges
            .keys()
            .chain(batch.through.keys())
            .filter_map(|p| Some((*p, (*self.committed.get(p)?)?)))
            .collect()
    }

    /// The id of the topic `partition`'s offset was read from (see `BatchInfo::topic_id`).
    pub async fn committed_topic(&mut self, partition: i32) -> Result<Option<i64>, SinkError> {
        self.cached_stamp(partition).await.map_err(|e| self.err(e))
    }

    async fn cached_stamp(&mut self, partition: i32) -> Result<Option<i64>, DeltaTableError> {
        if let Some(v) = self.stamps.get(&partition) {
            return Ok(*v);
        }
        let app_id = topic_app_id(&self.opts.pipeline, &self.opts.topic, partition);
        let v = self.txn_version(app_id).await?;
        self.stamps.insert(partition, v);
        Ok(v)
    }

    /// Load the latest table version (another process may have committed).
    pub async fn refresh(&mut self) -> Result<(), SinkError> {
        self.forget();
        self.stream_checked = false;
        self.table
            .update_incremental(None)
            .await
            .map_err(|e| self.err(e))
    }

    /// Commit `rows` (which hold `kafka_partition` and `kafka_offset` columns) exactly
    /// once, as `write` says. Retries conflicts at once
    /// and storage errors with backoff until `retry_timeout`, re-reading the table (and
    /// recomputing the batch from the then current state) each time.
    pub async fn commit(
        &mut self,
        rows: &RecordBatch,
        batch: &BatchInfo,
        mut write: Write<'_>,
    ) -> Result<CommitOutcome, SinkError> {
        let started = Instant::now();
        self.timings = CommitTimings::default();
        // Storage failures back off up to 10 s; conflicts only briefly.
        let mut failures = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut conflicts = Backoff::new(Duration::from_millis(5), Duration::from_millis(500));
        // Files written for a given set of new offset ranges, kept across retries.
        let mut written: Option<Written> = None;
        // A batch is dropped as already committed only as the table is now, never as
        // this sink last saw it: another member may have reset the offsets since.
        let mut reread = false;
        loop {
            let result = match &mut write {
                Write::Query(engine) => self.try_stream(rows, batch, engine).await,
                Write::Upsert { keys } => self.try_upsert(rows, batch, keys).await,
                Write::Append => self.try_commit(rows, batch, &mut written).await,
            };
            if matches!(result, Ok(CommitOutcome::AlreadyCommitted)) && !reread {
                reread = true;
                if self.refresh().await.is_ok() {
                    continue;
                }
            }
            let error = match result {
                Ok(outcome) => {
                    if let CommitOutcome::Committed { version, .. } = outcome {
                        self.checkpoint_if_due(version as u64).await;
                    }
                    return Ok(outcome);
                }
                Err(AttemptError::Engine(e)) => return Err(e.into()),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Delta(e)) => e,
            };
            if started.elapsed() > self.opts.retry_timeout {
                return Err(SinkError::GaveUp {
                    table: self.name.clone(),
                    seconds: started.elapsed().as_secs(),
                    cause: Box::new(error),
                });
            }
            // Conflicts back off too (briefly, jittered): writers that retry in step
            // would otherwise keep colliding.
            let conflict = error.retry() == Retry::Conflict;
            let wait = if conflict {
                self.timings.conflicts += 1;
                self.opts.contention.report(&self.name);
                debug!(table = %self.name, "concurrent commit, re-reading the table");
                conflicts.next_wait()
            } else {
                let wait = failures.next_wait();
                warn!(table = %self.name, error = %crate::report::Report(&error), retry_in = ?wait, "commit failed, will re-read the table and retry");
                wait
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.opts.shutdown.cancelled(), if !conflict => {
                    return Err(SinkError::Abandoned {
                        table: self.name.clone(),
                        cause: Box::new(error),
                    });
                }
            }
            // A failed refresh is retried on the next turn like any other storage error.
            let refreshed = match conflict {
                true => self.catch_up_with_winners().await,
                false => self.refresh().await,
            };
            if let Err(e) = refreshed {
                warn!(table = %self.name, error = %crate::report::Report(&e), "cannot re-read the table");
            }
        }
    }

    async fn checkpoint_if_due(&mut self, version: u64) {
        super::checkpoint::after_commit(
            &self.table,
            &self.name,
            self.last_commit,
            self.opts.checkpoint_interval,
            self.opts.log_retention,
        )
        .await;
        self.last_commit = Some(version);
    }

    /// Offsets the table holds for the batch's partitions, the part it lacks, and the
    /// offset to record per partition (see [`BatchInfo::through`]).
    async fn new_part(&mut self, batch: &BatchInfo) -> Result<NewPart, DeltaTableError> {
        let mut committed = HashMap::new();
        for &p in batch.ranges.keys().chain(batch.through.keys()) {
            if committed.contains_key(&p) {
                continue;
            }
            let v = match self.stale(p, batch.topic_id).await? {
                true => Some(i64::MAX),
                false => self.cached_offset(p).await?,
            };
            committed.insert(p, v);
        }
        let ranges = new_ranges(&batch.ranges, &committed);
        let record = to_record(ranges.as_ref(), &batch.through, &committed);
        Ok(NewPart {
            committed,
            ranges,
            record,
        })
    }

    /// Record that the table holds every offset up to `batch.through` where it holds
    /// less: a commit with no data, for offsets that were no records. None when there
    /// was nothing to record.
    pub async fn advance(&mut self, batch: &BatchInfo) -> Result<Option<i64>, SinkError> {
        let mut conflicts = Backoff::new(Duration::from_millis(5), Duration::from_millis(500));
        let started = Instant::now();
        loop {
            let attempt = async {
                let part = self.new_part(batch).await?;
                if part.record.is_empty() {
                    return Ok(None);
                }
                let only = Some(("positionsOnly", Value::Bool(true)));
                let no_records = BTreeMap::new();
                let props =
                    self.properties(&part.record, &no_records, (None, batch.topic_id), 0, only);
                let version = self
                    .commit_actions(Vec::new(), props, OutputMode::Append, None)
                    .await?;
                self.landed(&part.record, batch, None);
                debug!(table = %self.name, offsets = ?part.record, "positions past offsets without records recorded");
                Ok(Some(version))
            }
            .await;
            match attempt {
                Ok(version) => return Ok(version),
                Err(e) if started.elapsed() > self.opts.retry_timeout => {
                    return Err(SinkError::GaveUp {
                        table: self.name.clone(),
                        seconds: started.elapsed().as_secs(),
                        cause: Box::new(e),
                    })
                }
                Err(e) => {
                    let conflict = e.retry() == Retry::Conflict;
                    let wait = match conflict {
                        true => conflicts.next_wait(),
                        false => Duration::from_millis(500),
                    };
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        // Only positions: the next run records them again.
                        () = self.opts.shutdown.cancelled() => return Ok(None),
                    }
                    if let Err(e) = self.refresh().await {
                        warn!(table = %self.name, error = %crate::report::Report(&e), "cannot re-read the table");
                    }
                }
            }
        }
    }

    /// Whether the batch's records of `partition` come from an earlier incarnation of
    /// the topic than the table's offsets: the reader resets the tables (stamping the
    /// new topic id) before it reads a recreated topic, and only a reset changes a
    /// partition's stamp, so such records were read before the topic was deleted and
    /// are dropped like records the table already holds (the reader reported the loss).
    async fn stale(&mut self, partition: i32, batch: Option<i64>) -> Result<bool, DeltaTableError> {
        let Some(batch) = batch else { return Ok(false) };
        let held = self.cached_stamp(partition).await?;
        let stale = held.is_some_and(|h| h != batch);
        if stale {
            warn!(table = %self.name, partition, "records read before the topic was recreated: not written");
        }
        Ok(stale)
    }

    /// The id the next batch commit gets.
    async fn next_batch_id(&mut self) -> Result<i64, DeltaTableError> {
        let last = match self.last_batch_id {
            Some(last) => last,
            None => self.txn_version(self.batch_app_id()).await?,
        };
        self.last_batch_id = Some(last);
        Ok(last.map_or(0, |v| v + 1))
    }

    /// The commit's `txn` actions (the offsets in `record`, the batch id) and its
    /// `lakestream` entry (the new records' `new_ranges`).
    fn properties(
        &self,
        record: &BTreeMap<i32, i64>,
        new_ranges: &BTreeMap<i32, OffsetRange>,
        batch: (Option<i64>, Option<i64>),
        rows: usize,
        extra: Option<(&str, Value)>,
    ) -> CommitProperties {
        let (batch_id, topic_id) = batch;
        let mut txns = offset_txns(
            (&self.opts.pipeline, &self.opts.topic),
            record.iter().map(|(&p, &o)| (p, o)),
            topic_id,
        );
        if let Some(id) = batch_id {
            txns.push(Transaction::new(self.batch_app_id(), id));
        }
        let mut metadata = json!({
            "pipeline": self.opts.pipeline,
            "batchId": batch_id,
            "topic": self.opts.topic,
            "offsets": new_ranges.iter().map(|(p, r)| (p.to_string(), json!([r.first, r.last]))).collect::<serde_json::Map<_, _>>(),
            "rows": rows,
        });
        if let Some((key, value)) = extra {
            metadata[key] = value;
        }
        crate::storage::commit_properties()
            .with_application_transactions(txns)
            .with_metadata([("lakestream".to_string(), metadata)])
            .with_max_retries(0)
    }

    /// Commit `actions` against the loaded snapshot (never a later one).
    async fn commit_actions(
        &mut self,
        actions: Vec<Action>,
        props: CommitProperties,
        output_mode: OutputMode,
        batch_id: Option<i64>,
    ) -> Result<i64, DeltaTableError> {
        let operation = DeltaOperation::StreamingUpdate {
            output_mode,
            query_id: self.opts.pipeline.clone(),
            epoch_id: batch_id.unwrap_or(-1),
        };
        let t = Instant::now();
        let snapshot: &dyn TableReference = self.table.snapshot()?;
        let finalized = CommitBuilder::from(props)
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await?;
        self.timings.commit_ms += ms_since(t);
        self.table.state = Some(finalized.snapshot());
        Ok(finalized.version() as i64)
    }

    fn landed(&mut self, record: &BTreeMap<i32, i64>, batch: &BatchInfo, batch_id: Option<i64>) {
        for (p, last) in record {
            self.committed.insert(*p, Some(*last));
            if batch.topic_id.is_some() {
                self.stamps.insert(*p, batch.topic_id);
            }
        }
        if batch_id.is_some() {
            self.last_batch_id = Some(batch_id);
        }
    }

    async fn write(&mut self, rows: &RecordBatch) -> Result<Vec<Add>, DeltaTableError> {
        let t = Instant::now();
        let adds = write_files(
            &self.table,
            rows.clone(),
            self.props.clone(),
            self.opts.target_file_size,
            &self.opts.storage,
        )
        .await;
        self.timings.write_ms += ms_since(t);
        adds
    }
}

/// What [`DeltaSink::new_part`] found.
struct NewPart {
    /// What the table holds per partition of the batch (`i64::MAX`: records of a
    /// deleted topic, never written).
    committed: HashMap<i32, Option<i64>>,
    /// The records' ranges the table lacks (None: it holds them all).
    ranges: Option<BTreeMap<i32, OffsetRange>>,
    /// The offset to record per partition: the new records' last, or the consumer's
    /// position past them where the table holds less.
    record: BTreeMap<i32, i64>,
}

fn to_record(
    ranges: Option<&BTreeMap<i32, OffsetRange>>,
    through: &BTreeMap<i32, i64>,
    committed: &HashMap<i32, Option<i64>>,
) -> BTreeMap<i32, i64> {
    let mut record: BTreeMap<i32, i64> = ranges
        .into_iter()
        .flatten()
        .map(|(&p, r)| (p, r.last))
        .collect();
    for (&p, &last) in through {
        let held = committed.get(&p).copied().flatten();
        if held.is_none_or(|h| h < last) && record.get(&p).is_none_or(|&r| r < last) {
            record.insert(p, last);
        }
    }
    record
}

/// The rows of `batch` the table does not hold yet (all of them unless another writer
/// or an earlier attempt committed part of it).
fn rows_beyond(
    rows: &RecordBatch,
    batch: &BatchInfo,
    new_ranges: &BTreeMap<i32, OffsetRange>,
    committed: &HashMap<i32, Option<i64>>,
) -> Result<RecordBatch, DeltaTableError> {
    match *new_ranges == batch.ranges {
        true => Ok(rows.clone()),
        false => drop_committed(rows, committed),
    }
}
