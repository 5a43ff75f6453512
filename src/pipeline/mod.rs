//! Pipelines: consume -> decode -> commit, as stages that overlap, so batch N+1 is read
//! and decoded while batch N is written. The pipelines of one source share one reader
//! (one consumer, one decode, see `reader`); each commits to its own table.

mod catchup;
mod progress;
mod reader;
mod stages;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use deltalake::arrow::array::{AsArray, BooleanArray, RecordBatch};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{Int32Type, Int64Type};

use crate::config::{Config, OutputMode, PipelineConfig};
use crate::decode::{dead_letter_schema, Decoded, JsonDecoder};
use crate::engine::{Changes, Derive, Engine};
use crate::metrics::{
    Durations, EventTime, Latency, PipelineMetrics, PipelineState, Progress, SinkProgress,
    Snapshot, SourceProgress,
};
use crate::sink::{BatchInfo, CommitOutcome, DeltaSink, SinkOptions};
use crate::source::{OffsetRange, OffsetStore, ProducedAt, RawBatch, SourceHandle};
use crate::{Error, Result};
use catchup::{CatchUp, Status};
use progress::BatchReport;
pub use reader::{reader_groups, source_topics, start_source, Started};
use stages::GroupCommits;

/// How a run ends, and how it reports.
#[derive(Debug, Clone, Copy, Default)]
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
}

/// A decoded batch on its way to the commit stage (one copy per pipeline; the Arrow
/// arrays are shared).
#[derive(Clone)]
struct Ready {
    opened_at: Option<Instant>,
    /// First record to the batch closing, and time spent decoding.
    fetch_ms: u64,
    decode_ms: u64,
    ranges: BTreeMap<i32, OffsetRange>,
    /// The consumer's positions when the batch closed.
    positions: HashMap<i32, i64>,
    records: usize,
    bytes: usize,
    /// When the records were produced, for the latency in the progress record.
    produced: Option<ProducedAt>,
    /// The id of the topic they were read from (see `RawBatch::topic_id`).
    topic_id: Option<i64>,
    decoded: Decoded,
}

pub struct Pipeline {
    name: String,
    config: Config,
    metrics: Arc<PipelineMetrics>,
    /// Where its sinks report lost commits (maintenance yields to them).
    contention: crate::sink::Contention,
}

/// A pipeline ready to consume: tables open, state restored, refusals checked.
struct Prepared {
    p: PipelineConfig,
    sink_opts: SinkOptions,
    table: DeltaSink,
    dead: DeltaSink,
    engine: Option<Engine>,
    /// Upsert mode: turns each batch into one change per key.
    changes: Option<Changes>,
    /// Computed partition columns (`date(...)`), added to each batch's rows.
    derive: Derive,
    catch_up: Option<CatchUp>,
}

/// What one pipeline takes from its source's reader.
struct Feed {
    rx: mpsc::Receiver<Ready>,
    source: SourceHandle,
    group: Arc<GroupCommits>,
    /// This pipeline's place in `group`.
    slot: usize,
    /// Resets of the tables' offsets so far (see `TablesOffsets::resets`).
    resets: Arc<std::sync::atomic::AtomicU64>,
    /// The reader stops once every pipeline it feeds has dropped this.
    _reading: Arc<tokio_util::sync::DropGuard>,
}

impl Pipeline {
    pub fn new(name: &str, config: Config, contention: crate::sink::Contention) -> Self {
        Self {
            name: name.to_string(),
            config,
            metrics: Arc::new(PipelineMetrics::new(name)),
            contention,
        }
    }

    /// This pipeline on one topic of its multi-topic source, counting into the same
    /// metrics (see `Config::for_topic`).
    pub fn for_topic(&self, topic: &str) -> Pipeline {
        let source = &self.config.pipelines[&self.name].source;
        Self {
            name: self.name.clone(),
            config: self.config.for_topic(source, topic),
            metrics: self.metrics.clone(),
            contention: self.contention.clone(),
        }
    }

    /// The tables this pipeline writes (its table and its dead letters).
    pub fn tables(&self) -> [String; 2] {
        let p = &self.config.pipelines[&self.name];
        [p.table.clone(), p.dead_letter_table()]
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its sinks report lost commits.
    pub fn contention(&self) -> &crate::sink::Contention {
        &self.contention
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters this pipeline updates while it runs (for the status page).
    pub fn metrics(&self) -> Arc<PipelineMetrics> {
        self.metrics.clone()
    }

    fn fail(&self, message: impl ToString) -> Error {
        Error::Pipeline {
            pipeline: self.name.clone(),
            message: message.to_string(),
        }
    }

    /// Open the tables, compile the SQL and restore the state; refusals (another
    /// pipeline's table, an incompatible schema) come here, before the reader joins the
    /// group, so a refused member never holds partitions.
    async fn prepare(
        &self,
        partitions: &[i32],
        catch_up: Option<CatchUp>,
        shutdown: CancellationToken,
    ) -> Result<Prepared> {
        let p = self.config.pipelines[&self.name].clone();
        let source = &self.config.sources[&p.source];
        let decoder = self.decoder()?;
        let mut engine = match &p.sql {
            Some(_) => {
                Some(Engine::compile(&self.config, &self.name, decoder.table_schema()).await?)
            }
            None => None,
        };
        let derive = Derive::new(p.derived(), source.zone(&p.source)?);
        let changes = (p.mode == OutputMode::Upsert).then(|| {
            Changes::new(
                &self.name,
                p.keys.clone(),
                p.delete_predicate(source.format),
                derive.schema(&decoder.tombstone_schema()),
            )
        });
        // An upsert table's columns are all nullable: a delete carries only its key.
        let schema = match (&engine, &changes) {
            (Some(engine), _) => engine.output_schema(),
            (None, Some(_)) => derive.schema(&decoder.tombstone_schema()),
            (None, None) => derive.schema(&decoder.table_schema()),
        };
        let sink_opts = self.sink_options(&p, &source.topic, shutdown);
        let mut table = DeltaSink::open(&p.table, &schema, sink_opts.clone()).await?;
        let dlq_opts = SinkOptions {
            partition_by: Vec::new(),
            change_data_feed: false,
            upsert_keys: Vec::new(),
            ..sink_opts.clone()
        };
        let dead = DeltaSink::open(&p.dead_letter_table(), &dead_letter_schema(), dlq_opts).await?;
        if let Some(v) = table.version() {
            self.metrics.table_version.store(v, Ordering::Relaxed);
        }
        let ownership = crate::sink::Ownership {
            adopt: p.adopt,
            shared_by_topics: p.shared_by_topics,
        };
        table.check_owner(partitions, ownership).await?;
        if let Some(engine) = engine.as_mut() {
            engine.set_partitions(partitions.to_vec());
            table.stream_state(engine).await?;
        }
        Ok(Prepared {
            p,
            sink_opts,
            table,
            dead,
            engine,
            changes,
            derive,
            catch_up,
        })
    }

    /// The decoder of this pipeline's source (every pipeline of a source decodes alike).
    fn decoder(&self) -> Result<JsonDecoder> {
        let p = &self.config.pipelines[&self.name];
        let source = &self.config.sources[&p.source];
        let fields = source.field_specs(&p.source)?;
        Ok(
            JsonDecoder::new(fields, source.max_message_bytes, &self.name)
                .with_zone(source.zone(&p.source)?)
                .with_debezium(source.format == crate::config::SourceFormat::DebeziumJson)
                .with_evolution(
                    source.schema_evolution == crate::config::SchemaEvolution::AddColumns,
                ),
        )
    }

    /// Commit what the reader sends until it stops (or, catching up, until the table
    /// holds the topic's ends); returns the final counters.
    async fn consume(
        self,
        prepared: Prepared,
        mut feed: Feed,
        opts: RunOptions,
    ) -> Result<Snapshot> {
        let Prepared {
            p,
            mut table,
            mut dead,
            mut engine,
            changes,
            derive,
            mut catch_up,
            ..
        } = prepared;
        info!(pipeline = %self.name, topic = %feed.source.topic(), table = %p.table, "pipeline started");
        self.metrics.set_state(PipelineState::Running);
        // Stops with the pipeline, however it returns.
        let lag_stop = CancellationToken::new();
        tokio::spawn(watch_high_watermarks(
            feed.source.clone(),
            self.metrics.clone(),
            lag_stop.clone(),
        ));
        let _lag_guard = lag_stop.drop_guard();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut late_error = None;
        let mut resets_seen = 0;
        loop {
            let ready = tokio::select! {
                ready = feed.rx.recv() => ready,
                _ = tick.tick(), if catch_up.is_some() => {
                    // Other members commit too: look at the table as it is now.
                    if let Err(e) = table.refresh().await {
                        tracing::warn!(table = %p.table, error = %e, "cannot re-read the table");
                        continue;
                    }
                    self.check_caught_up(&mut catch_up, &mut table, &mut feed, &mut late_error).await;
                    continue;
                }
            };
            let Some(ready) = ready else { break };
            reread_after_reset(&feed, &mut resets_seen, [&mut table, &mut dead]).await?;
            let positions = ready.positions.clone();
            let committed = self
                .commit(
                    ready,
                    (&mut table, &mut dead),
                    &feed,
                    (engine.as_mut(), changes.as_ref(), &derive),
                    opts,
                )
                .await;
            if let Err(e) = committed {
                self.metrics.set_state(PipelineState::Failed);
                return Err(e);
            }
            if let Some(c) = catch_up.as_mut() {
                c.covered(&positions);
                reread_after_reset(&feed, &mut resets_seen, [&mut table, &mut dead]).await?;
                self.check_caught_up(&mut catch_up, &mut table, &mut feed, &mut late_error)
                    .await;
            }
        }
        if let Some(e) = late_error {
            self.metrics.set_state(PipelineState::Failed);
            return Err(e);
        }
        self.metrics.set_state(PipelineState::Stopped);
        Ok(self.metrics.snapshot(&self.name, &p.table))
    }

    /// Stop listening once caught up (the batches in flight still commit), or when the
    /// deadline passes (the run then fails with what is missing).
    async fn check_caught_up(
        &self,
        catch_up: &mut Option<CatchUp>,
        table: &mut DeltaSink,
        feed: &mut Feed,
        late_error: &mut Option<Error>,
    ) {
        let Some(c) = catch_up.as_mut() else { return };
        let (positioned, topic_id) = feed.source.checked();
        let seen = catchup::Seen {
            assigned: feed.source.assigned(),
            positioned,
            topic_id,
        };
        match c.check(table, &seen).await {
            Ok(Status::Waiting) => return,
            Ok(Status::Done) => {}
            Err(message) => *late_error = Some(self.fail(message)),
        }
        *catch_up = None;
        // The batches already queued still commit; the reader stops once no pipeline
        // of the source listens.
        feed.rx.close();
    }

    fn sink_options(
        &self,
        p: &PipelineConfig,
        topic: &str,
        shutdown: CancellationToken,
    ) -> SinkOptions {
        let storage = &self.config.storage;
        SinkOptions {
            storage: crate::storage::Storage::from_config(&self.config),
            pipeline: self.name.clone(),
            topic: topic.to_string(),
            partition_by: p.partition_columns(),
            change_data_feed: matches!(p.mode, OutputMode::Update | OutputMode::Upsert),
            upsert_keys: match p.mode {
                OutputMode::Upsert => p.keys.clone(),
                _ => Vec::new(),
            },
            zstd_level: storage.zstd_level,
            target_file_size: storage.target_file_size,
            no_dictionary: p.no_dictionary(),
            retry_timeout: p.commit_retry_timeout,
            checkpoint_interval: self.config.maintenance.checkpoint_interval,
            log_retention: self.config.maintenance.log_retention,
            shutdown,
            contention: self.contention.clone(),
        }
    }

    /// Dead letters first, then the rows: the consumer resumes from the row table's
    /// offsets, so a crash between the two replays the batch and the dead-letter table
    /// skips what it already holds.
    async fn commit(
        &self,
        ready: Ready,
        (table, dead): (&mut DeltaSink, &mut DeltaSink),
        feed: &Feed,
        (mut engine, changes, derive): (Option<&mut Engine>, Option<&Changes>, &Derive),
        opts: RunOptions,
    ) -> Result<()> {
        let source = &feed.source;
        let Ready {
            opened_at,
            fetch_ms,
            decode_ms,
            ranges,
            positions,
            records,
            bytes,
            produced,
            topic_id,
            decoded,
        } = ready;
        if records == 0 {
            return Ok(()); // positions only: the consumer reached the end of partitions
        }
        if let Some(engine) = engine.as_deref_mut() {
            engine.set_behind(behind(&source.high_watermarks(), &positions));
        }
        let info = BatchInfo {
            ranges: ranges.clone(),
            with_batch_id: false,
            topic_id,
        };
        let rows = derive
            .apply(&decoded.rows)
            .map_err(crate::decode::DecodeError::from)?;
        let (batch_rows, dead_letters) = match changes {
            Some(changes) => {
                let batch = changes.batch(&rows, &decoded.tombstones).await?;
                let dead = without(&decoded.dead_letters, &batch.tombstones)?;
                (batch.rows, dead)
            }
            None => (rows, decoded.dead_letters),
        };
        let mut dead_rows = 0;
        if dead_letters.num_rows() > 0 {
            let dead_letters = crate::decode::for_pipeline(&dead_letters, &self.name)
                .map_err(crate::decode::DecodeError::from)?;
            if let CommitOutcome::Committed { rows, .. } =
                dead.commit(&dead_letters, &info, None).await?
            {
                dead_rows = rows;
            }
        }
        if dead_rows > 0 {
            crate::failpoint::hit("after_dead_letters", &self.name);
        }
        let info = BatchInfo {
            with_batch_id: true,
            ..info
        };
        let outcome = table.commit(&batch_rows, &info, engine).await?;
        if matches!(outcome, CommitOutcome::Committed { .. }) {
            crate::failpoint::hit("after_commit", &self.name);
        }
        feed.group.committed(feed.slot, &ranges);

        let m = &self.metrics;
        m.conflicts
            .inc_by(table.timings().conflicts + dead.timings().conflicts);
        m.committed(opened_at);
        m.batches.inc_by(1);
        m.records.inc_by(records as u64);
        m.bytes.inc_by(bytes as u64);
        m.dead_letters.inc_by(dead_rows as u64);
        match outcome {
            CommitOutcome::Committed {
                version,
                rows,
                input_rows,
                late_rows,
                state_rows,
                watermark,
                ..
            } => {
                m.rows.inc_by(rows as u64);
                m.skipped
                    .inc_by(batch_rows.num_rows().saturating_sub(input_rows) as u64);
                m.late_rows.inc_by(late_rows);
                m.state_rows.set(state_rows as i64);
                if let Some(w) = watermark {
                    m.watermark.store(w, Ordering::Relaxed);
                }
                m.table_version.store(version, Ordering::Relaxed);
            }
            CommitOutcome::AlreadyCommitted => {
                m.skipped.inc_by(batch_rows.num_rows() as u64);
                info!(pipeline = %self.name, records, "batch already in the table, skipped");
            }
        }
        let batch = BatchReport {
            opened_at,
            fetch_ms,
            decode_ms,
            records,
            dead_letters: dead_rows,
            ranges: &ranges,
            produced,
        };
        let progress = self.progress(&batch, &outcome, table, source);
        if opts.progress_json {
            eprintln!("{}", serde_json::to_string(&progress).unwrap_or_default());
        } else {
            info!(pipeline = %self.name, "{}", progress.line());
        }
        m.record(progress);
        Ok(())
    }
}

/// The reader lowered the tables' offsets (a recreated topic): re-read what the sinks
/// cached, or the new topic's records would be dropped as replays (and a catch-up
/// judged on offsets that are gone).
async fn reread_after_reset(feed: &Feed, seen: &mut u64, sinks: [&mut DeltaSink; 2]) -> Result<()> {
    let resets = feed.resets.load(Ordering::SeqCst);
    if resets != *seen {
        *seen = resets;
        for sink in sinks {
            sink.refresh().await?;
        }
    }
    Ok(())
}

/// Copy the broker's latest offsets into the metrics every second, so the lag shown
/// keeps moving while no batch commits (a stalled pipeline falls behind visibly).
async fn watch_high_watermarks(
    handle: SourceHandle,
    metrics: Arc<PipelineMetrics>,
    stop: CancellationToken,
) {
    loop {
        metrics.set_high_watermarks(handle.high_watermarks());
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Dead letters but those of the tombstones `applied` (partition, offset).
fn without(
    dead: &RecordBatch,
    applied: &HashSet<(i32, i64)>,
) -> std::result::Result<RecordBatch, crate::decode::DecodeError> {
    if applied.is_empty() {
        return Ok(dead.clone());
    }
    let partitions = dead
        .column_by_name("kafka_partition")
        .and_then(|c| c.as_primitive_opt::<Int32Type>());
    let offsets = dead
        .column_by_name("kafka_offset")
        .and_then(|c| c.as_primitive_opt::<Int64Type>());
    let (Some(partitions), Some(offsets)) = (partitions, offsets) else {
        return Ok(dead.clone());
    };
    let keep: BooleanArray = partitions
        .values()
        .iter()
        .zip(offsets.values())
        .map(|(&p, &o)| Some(!applied.contains(&(p, o))))
        .collect();
    Ok(filter_record_batch(dead, &keep)?)
}

/// Partitions with records left to read beyond what the consumer had reached.
fn behind(high: &HashMap<i32, i64>, positions: &HashMap<i32, i64>) -> HashSet<i32> {
    positions
        .iter()
        .filter(|(p, pos)| high.get(p).is_some_and(|h| h > pos))
        .map(|(p, _)| *p)
        .collect()
}
