//! One pipeline: consume -> decode -> commit, as three stages that overlap, so batch
//! N+1 is read and decoded while batch N is written.

mod catchup;
mod progress;
mod stages;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, PipelineConfig};
use crate::decode::{dead_letter_schema, Decoded, JsonDecoder};
use crate::engine::Engine;
use crate::metrics::{
    Durations, EventTime, PipelineMetrics, PipelineState, Progress, SinkProgress, Snapshot,
    SourceProgress,
};
use crate::sink::{BatchInfo, CommitOutcome, DeltaSink, SinkOptions};
use crate::source::{
    ConsumerSettings, DataLossPolicy, KafkaSource, OffsetRange, OffsetStore, RawBatch, SourceHandle,
};
use crate::{Error, Result};
use catchup::{CatchUp, Status};
use progress::BatchReport;
use stages::{decode_stage, TableOffsets};

/// How a run ends, and how it reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop once the table holds every partition of the topic up to its end at start.
    pub until_caught_up: bool,
    /// With `until_caught_up`: fail when not caught up this long after start.
    pub deadline: Option<std::time::Duration>,
    /// Progress records as JSON lines on stderr instead of a human log line.
    pub progress_json: bool,
}

/// A decoded batch on its way to the commit stage.
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
    decoded: Decoded,
}

pub struct Pipeline {
    name: String,
    config: Config,
    metrics: Arc<PipelineMetrics>,
}

impl Pipeline {
    pub fn new(name: &str, config: Config) -> Self {
        Self {
            name: name.to_string(),
            config,
            metrics: Arc::new(PipelineMetrics::new(name)),
        }
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

    /// Run until `shutdown` (or caught up); returns the final counters.
    pub async fn run(self, opts: RunOptions, shutdown: CancellationToken) -> Result<Snapshot> {
        let p = self.config.pipelines[&self.name].clone();
        let source = self.config.sources[&p.source].clone();
        let fields = source.field_specs(&p.source)?;
        let decoder = JsonDecoder::new(fields, source.max_message_bytes, &self.name);
        let mut engine = match &p.sql {
            Some(_) => {
                Some(Engine::compile(&self.config, &self.name, decoder.table_schema()).await?)
            }
            None => None,
        };
        let schema = engine
            .as_ref()
            .map_or_else(|| decoder.table_schema(), Engine::output_schema);
        let sink_opts = self.sink_options(&p, &source.topic, shutdown.clone());
        let mut table = DeltaSink::open(&p.table, &schema, sink_opts.clone()).await?;
        let dlq_opts = SinkOptions {
            partition_by: Vec::new(),
            ..sink_opts.clone()
        };
        let mut dead =
            DeltaSink::open(&p.dead_letter_table(), &dead_letter_schema(), dlq_opts).await?;
        if let Some(v) = table.version() {
            self.metrics.table_version.store(v, Ordering::Relaxed);
        }

        let mut catch_up = match opts.until_caught_up {
            true => Some(self.catch_up(&source.topic, opts).await?),
            false => None,
        };
        // Refusals come before joining the group: a refused member never holds partitions.
        let partitions = self.partitions(&source.topic).await?;
        table.check_owner(&partitions, p.adopt).await?;
        if let Some(engine) = engine.as_mut() {
            engine.set_partitions(partitions);
            table.stream_state(engine).await?;
        }
        let targets = catch_up.as_ref().map(|c| Arc::new(c.targets()));
        let settings = self.consumer_settings(&p, &source.topic, targets);
        let store = TableOffsets {
            opts: sink_opts,
            table: p.table.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let (consumer, handle) = KafkaSource::new(settings, Box::new(store))?;
        info!(pipeline = %self.name, topic = %source.topic, table = %p.table, "pipeline started");

        let (raw_tx, raw_rx) = mpsc::channel::<RawBatch>(1);
        let (ready_tx, mut ready_rx) = mpsc::channel::<Ready>(1);
        let stop = shutdown.child_token();
        let consume = {
            let stop = stop.clone();
            tokio::task::spawn_blocking(move || consumer.run(raw_tx, stop))
        };
        let decode = tokio::spawn(decode_stage(decoder, raw_rx, ready_tx));

        self.metrics.set_state(PipelineState::Running);
        // Stops with the pipeline, however it returns.
        let lag_stop = stop.child_token();
        tokio::spawn(watch_high_watermarks(
            handle.clone(),
            self.metrics.clone(),
            lag_stop.clone(),
        ));
        let _lag_guard = lag_stop.drop_guard();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut late_error = None;
        loop {
            let ready = tokio::select! {
                ready = ready_rx.recv() => ready,
                _ = tick.tick(), if catch_up.is_some() => {
                    // Other members commit too: look at the table as it is now.
                    if let Err(e) = table.refresh().await {
                        tracing::warn!(table = %p.table, error = %e, "cannot re-read the table");
                        continue;
                    }
                    self.check_caught_up(&mut catch_up, &mut table, &handle, &stop, &mut late_error).await;
                    continue;
                }
            };
            let Some(ready) = ready else { break };
            let positions = ready.positions.clone();
            let committed = self
                .commit(ready, &mut table, &mut dead, &handle, engine.as_mut(), opts)
                .await;
            if let Err(e) = committed {
                self.metrics.set_state(PipelineState::Failed);
                return Err(e);
            }
            if let Some(c) = catch_up.as_mut() {
                c.covered(&positions);
                self.check_caught_up(&mut catch_up, &mut table, &handle, &stop, &mut late_error)
                    .await;
            }
        }
        let stopped = decode
            .await
            .map_err(|e| self.fail(format!("decode stage: {e}")))
            .and_then(|r| r)
            .and(
                consume
                    .await
                    .map_err(|e| self.fail(format!("consumer thread: {e}")))
                    .and_then(|r| r.map_err(Error::from)),
            )
            .and(late_error.map_or(Ok(()), Err));
        if let Err(e) = stopped {
            self.metrics.set_state(PipelineState::Failed);
            return Err(e);
        }
        self.metrics.set_state(PipelineState::Stopped);
        Ok(self.metrics.snapshot(&self.name, &p.table))
    }

    /// The topic's partitions (none while it does not exist).
    async fn partitions(&self, topic: &str) -> Result<Vec<i32>> {
        let kafka = &self.config.kafka;
        let probe = crate::source::probe_config(&kafka.brokers, &kafka.options);
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || crate::source::topic_partitions(&probe, &topic))
            .await
            .map_err(|e| self.fail(format!("reading the topic's partitions: {e}")))?
            .map_err(Error::from)
    }

    /// The ends of every partition of the topic, read before consuming starts.
    async fn catch_up(&self, topic: &str, opts: RunOptions) -> Result<CatchUp> {
        let kafka = &self.config.kafka;
        let probe = crate::source::probe_config(&kafka.brokers, &kafka.options);
        let owned_topic = topic.to_string();
        let bounds =
            tokio::task::spawn_blocking(move || crate::source::topic_bounds(&probe, &owned_topic))
                .await
                .map_err(|e| self.fail(format!("reading the topic's ends: {e}")))??;
        let session_ms = kafka
            .options
            .get("session.timeout.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(45_000); // librdkafka's default
        Ok(CatchUp::new(
            bounds,
            kafka.starting_offsets == crate::config::StartingOffsets::Earliest,
            opts.deadline,
            std::time::Duration::from_millis(session_ms),
        ))
    }

    /// Stop the consumer once caught up (the batches in flight still commit), or when
    /// the deadline passes (the run then fails with what is missing).
    async fn check_caught_up(
        &self,
        catch_up: &mut Option<CatchUp>,
        table: &mut DeltaSink,
        handle: &SourceHandle,
        stop: &CancellationToken,
        late_error: &mut Option<Error>,
    ) {
        let Some(c) = catch_up.as_mut() else { return };
        let assigned = handle.assigned();
        match c.check(table, &assigned).await {
            Ok(Status::Waiting) => return,
            Ok(Status::Rejoin) => return handle.rejoin(),
            Ok(Status::Done) => {}
            Err(message) => *late_error = Some(self.fail(message)),
        }
        *catch_up = None;
        stop.cancel();
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
            partition_by: p.partition_by.clone(),
            zstd_level: storage.zstd_level,
            target_file_size: storage.target_file_size,
            no_dictionary: p.no_dictionary(),
            retry_timeout: p.commit_retry_timeout,
            checkpoint_interval: self.config.maintenance.checkpoint_interval,
            log_retention: self.config.maintenance.log_retention,
            shutdown,
        }
    }

    fn consumer_settings(
        &self,
        p: &PipelineConfig,
        topic: &str,
        targets: Option<Arc<BTreeMap<i32, i64>>>,
    ) -> ConsumerSettings {
        let kafka = &self.config.kafka;
        ConsumerSettings {
            brokers: kafka.brokers.clone(),
            group_id: self.config.group_id(&self.name),
            topic: topic.to_string(),
            options: kafka.options.clone(),
            starting: kafka.starting_offsets,
            seek_rewind: kafka.seek_rewind,
            max_records: p.max_offsets_per_trigger,
            max_bytes: p.max_bytes_per_trigger,
            trigger_interval: p.trigger_interval,
            targets,
            data_loss: DataLossPolicy {
                fail: kafka.fail_on_data_loss,
                events: self.metrics.data_loss_events.clone(),
            },
        }
    }

    /// Dead letters first, then the rows: the consumer resumes from the row table's
    /// offsets, so a crash between the two replays the batch and the dead-letter table
    /// skips what it already holds.
    async fn commit(
        &self,
        ready: Ready,
        table: &mut DeltaSink,
        dead: &mut DeltaSink,
        source: &SourceHandle,
        mut engine: Option<&mut Engine>,
        opts: RunOptions,
    ) -> Result<()> {
        let Ready {
            opened_at,
            fetch_ms,
            decode_ms,
            ranges,
            positions,
            records,
            bytes,
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
        };
        let mut dead_rows = 0;
        if decoded.dead_letters.num_rows() > 0 {
            if let CommitOutcome::Committed { rows, .. } =
                dead.commit(&decoded.dead_letters, &info, None).await?
            {
                dead_rows = rows;
            }
        }
        if dead_rows > 0 {
            crate::failpoint::hit("after_dead_letters");
        }
        let info = BatchInfo {
            with_batch_id: true,
            ..info
        };
        let outcome = table.commit(&decoded.rows, &info, engine).await?;
        if matches!(outcome, CommitOutcome::Committed { .. }) {
            crate::failpoint::hit("after_commit");
        }
        source.commit_offsets(&ranges);

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
                    .inc_by(decoded.rows.num_rows().saturating_sub(input_rows) as u64);
                m.late_rows.inc_by(late_rows);
                m.state_rows.set(state_rows as i64);
                if let Some(w) = watermark {
                    m.watermark.store(w, Ordering::Relaxed);
                }
                m.table_version.store(version, Ordering::Relaxed);
            }
            CommitOutcome::AlreadyCommitted => {
                m.skipped.inc_by(decoded.rows.num_rows() as u64);
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

/// Partitions with records left to read beyond what the consumer had reached.
fn behind(high: &HashMap<i32, i64>, positions: &HashMap<i32, i64>) -> HashSet<i32> {
    positions
        .iter()
        .filter(|(p, pos)| high.get(p).is_some_and(|h| h > pos))
        .map(|(p, _)| *p)
        .collect()
}
