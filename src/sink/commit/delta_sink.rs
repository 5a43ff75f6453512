//! The sink of one pipeline's table: open it, know what it holds (each partition's
//! offset and topic id, the batch counter, cached from one snapshot), and commit a batch
//! as its `Write` says, retried as the error says, against the version it checked.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::{DeltaTable, DeltaTableError};
use tracing::{debug, warn};

use super::append::Written;
use super::batch::{
    ms_since, AttemptError, BatchInfo, CommitOutcome, CommitTimings, Extra, SinkOptions, Write,
};
use super::replay::{new_ranges, to_record, NewPart};
use super::{append, stateful, upsert, winners};
use crate::engine::{Engine, StreamState};
use crate::retry::{Backoff, Retry, RetryHint};
use crate::sink::entry::CommitEntry;
use crate::sink::state::StateRef;
use crate::sink::table::{open_or_create, write_files, writer_properties};
use crate::sink::txn::{batch_app_id, offset_txns, topic_app_id, txn_app_id};
use crate::sink::SinkError;
use crate::sink::{checkpoint, offsets, Ownership};
use crate::source::OffsetRange;

/// A Delta table that micro-batches of one pipeline and topic are committed to.
pub struct DeltaSink {
    pub(super) name: String,
    pub(super) table: DeltaTable,
    pub(super) opts: SinkOptions,
    pub(super) props: WriterProperties,
    /// `txn` versions read from `table`'s current snapshot, by partition.
    pub(super) committed: HashMap<i32, Option<i64>>,
    /// The topic id each partition's offset was recorded for, read likewise.
    pub(super) stamps: HashMap<i32, Option<i64>>,
    /// Last batch id, read from the same snapshot (outer `None`: not read yet). Reading
    /// `txn` actions replays the log since the last checkpoint, so both are cached.
    pub(super) last_batch_id: Option<Option<i64>>,
    /// A stateful pipeline's state and the snapshot the table named for it (`None`: no
    /// batch yet); `None` until loaded.
    pub(super) stream: Option<(Option<StateRef>, StreamState)>,
    /// False after a refresh: `stream` must be checked against the table again.
    pub(super) stream_checked: bool,
    /// Version of this sink's last commit (decides when a checkpoint is due).
    pub(super) last_commit: Option<u64>,
    /// Where the last `commit` call spent its time (all attempts).
    pub(super) timings: CommitTimings,
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

    /// The state as of the table's latest commit by this pipeline (see
    /// `stateful::stream_state`).
    pub async fn stream_state(&mut self, engine: &Engine) -> Result<StreamState, SinkError> {
        stateful::stream_state(self, engine).await
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
        ownership: Ownership,
    ) -> Result<(), SinkError> {
        offsets::check_owner(&self.table, &self.name, &self.opts, partitions, ownership).await
    }

    /// Where the last `commit` spent its time.
    pub fn timings(&self) -> CommitTimings {
        self.timings
    }

    pub(super) fn app_id(&self, partition: i32) -> String {
        txn_app_id(&self.opts.pipeline, &self.opts.topic, partition)
    }

    pub(super) fn batch_app_id(&self) -> String {
        batch_app_id(&self.opts.pipeline)
    }

    pub(super) fn err(&self, source: DeltaTableError) -> SinkError {
        SinkError::delta(&self.name, source)
    }

    pub(super) async fn txn_version(&self, app_id: String) -> Result<Option<i64>, DeltaTableError> {
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

    pub(super) async fn cached_offset(
        &mut self,
        partition: i32,
    ) -> Result<Option<i64>, DeltaTableError> {
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

    pub(super) async fn cached_stamp(
        &mut self,
        partition: i32,
    ) -> Result<Option<i64>, DeltaTableError> {
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
        winners::forget(self);
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
                Write::Query(engine) => stateful::try_stream(self, rows, batch, engine).await,
                Write::Upsert { keys } => upsert::try_upsert(self, rows, batch, keys).await,
                Write::Append => append::try_commit(self, rows, batch, &mut written).await,
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
                true => winners::catch_up_with_winners(self).await,
                false => self.refresh().await,
            };
            if let Err(e) = refreshed {
                warn!(table = %self.name, error = %crate::report::Report(&e), "cannot re-read the table");
            }
        }
    }

    pub(super) async fn checkpoint_if_due(&mut self, version: u64) {
        checkpoint::after_commit(
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
    pub(super) async fn new_part(&mut self, batch: &BatchInfo) -> Result<NewPart, DeltaTableError> {
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
                let only = Extra::PositionsOnly;
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
    pub(super) async fn stale(
        &mut self,
        partition: i32,
        batch: Option<i64>,
    ) -> Result<bool, DeltaTableError> {
        let Some(batch) = batch else { return Ok(false) };
        let held = self.cached_stamp(partition).await?;
        let stale = held.is_some_and(|h| h != batch);
        if stale {
            warn!(table = %self.name, partition, "records read before the topic was recreated: not written");
        }
        Ok(stale)
    }

    /// The next batch id, where `batch` records one in this table.
    pub(super) async fn batch_id_for(
        &mut self,
        batch: &BatchInfo,
    ) -> Result<Option<i64>, DeltaTableError> {
        match batch.with_batch_id {
            true => Ok(Some(self.next_batch_id().await?)),
            false => Ok(None),
        }
    }

    /// The id the next batch commit gets.
    pub(super) async fn next_batch_id(&mut self) -> Result<i64, DeltaTableError> {
        let last = match self.last_batch_id {
            Some(last) => last,
            None => self.txn_version(self.batch_app_id()).await?,
        };
        self.last_batch_id = Some(last);
        Ok(last.map_or(0, |v| v + 1))
    }

    /// The commit's `txn` actions (the offsets in `record`, the batch id) and its
    /// `lakestream` entry (the new records' `new_ranges`).
    pub(super) fn properties(
        &self,
        record: &BTreeMap<i32, i64>,
        new_ranges: &BTreeMap<i32, OffsetRange>,
        batch: (Option<i64>, Option<i64>),
        rows: usize,
        extra: Extra,
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
        let mut entry = CommitEntry::batch(
            (&self.opts.pipeline, &self.opts.topic),
            batch_id,
            new_ranges,
            rows,
        );
        match extra {
            Extra::Nothing => {}
            Extra::PositionsOnly => entry.positions_only = true,
            Extra::State(state) => entry.state = Some(state),
        }
        crate::storage::commit_properties()
            .with_application_transactions(txns)
            .with_metadata([entry.metadata()])
            .with_max_retries(0)
    }

    /// Commit `actions` against the loaded snapshot (never a later one).
    pub(super) async fn commit_actions(
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

    pub(super) fn landed(
        &mut self,
        record: &BTreeMap<i32, i64>,
        batch: &BatchInfo,
        batch_id: Option<i64>,
    ) {
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

    pub(super) async fn write(&mut self, rows: &RecordBatch) -> Result<Vec<Add>, DeltaTableError> {
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
