//! One pipeline: what it does (its plan), how it prepares (tables opened, SQL compiled,
//! state restored, owner checked) and its commit loop over what the reader sends.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::catchup::{self, CatchUp, Status};
use super::stages::Feed;
use super::RunOptions;
use crate::config::{Mode, PipelinePlan, Plan, SourcePlan};
use crate::decode::{dead_letter_schema, Decoder};
use crate::engine::{Changes, Derive, Engine};
use crate::metrics::{PipelineMetrics, PipelineState, Snapshot};
use crate::sink::{DeltaSink, SinkOptions, Write};
use crate::source::SourceHandle;
use crate::{Error, Result};

pub struct Pipeline {
    /// What this pipeline does, compiled from the config.
    pub(super) spec: Arc<PipelinePlan>,
    /// The source it reads (one topic of it, for a multi-topic source).
    pub(super) source: Arc<SourcePlan>,
    /// The services it uses: Kafka, storage, lookups, checkpoints.
    pub(super) plan: Arc<Plan>,
    pub(super) metrics: Arc<PipelineMetrics>,
    /// Where its sinks report lost commits (maintenance yields to them).
    pub(super) contention: crate::sink::Contention,
    /// Where its table's schema is offered for catalog registration.
    pub(super) catalog: Option<crate::catalog::Offers>,
}

/// How a pipeline's batches change its table, matched once from its mode.
pub(super) enum Output {
    /// Records are appended as they are.
    Append,
    /// Each batch becomes one change per key, MERGEd by the keys.
    Upsert(Changes),
    /// The pipeline's query runs over each batch, with its state.
    Query(Box<Engine>),
}

impl Output {
    /// What the sink does with a batch.
    pub(super) fn write(&mut self) -> Write<'_> {
        match self {
            Self::Append => Write::Append,
            Self::Upsert(changes) => Write::Upsert {
                keys: changes.keys(),
            },
            Self::Query(engine) => Write::Query(engine),
        }
    }

    /// The query's engine, when the pipeline has one.
    pub(super) fn engine(&self) -> Option<&Engine> {
        match self {
            Self::Query(engine) => Some(engine),
            _ => None,
        }
    }
}

/// A pipeline ready to consume: tables open, state restored, refusals checked.
pub(super) struct Prepared {
    pub(super) sink_opts: SinkOptions,
    pub(super) table: DeltaSink,
    pub(super) dead: DeltaSink,
    pub(super) output: Output,
    /// Computed partition columns (`date(...)`), added to each batch's rows.
    pub(super) derive: Derive,
    pub(super) catch_up: Option<CatchUp>,
}

impl Pipeline {
    /// Pipeline `spec` reading `source` (see `Plan::readers`).
    pub fn new(
        spec: Arc<PipelinePlan>,
        source: Arc<SourcePlan>,
        plan: Arc<Plan>,
        (contention, catalog): (crate::sink::Contention, Option<crate::catalog::Offers>),
    ) -> Self {
        Self {
            source,
            metrics: Arc::new(PipelineMetrics::new(&spec.name)),
            spec,
            plan,
            contention,
            catalog,
        }
    }

    /// This pipeline as `spec` reading `source` (one topic of its multi-topic source,
    /// see `ReaderPlan::for_topic`), counting into the same metrics.
    pub fn reading(&self, spec: Arc<PipelinePlan>, source: Arc<SourcePlan>) -> Pipeline {
        Self {
            spec,
            source,
            plan: self.plan.clone(),
            metrics: self.metrics.clone(),
            contention: self.contention.clone(),
            catalog: self.catalog.clone(),
        }
    }

    /// Offer `table`'s columns to the catalog registrar (a comparison when unchanged).
    pub(super) fn offer_to_catalog(&self, table: &DeltaSink) {
        let Some(offers) = &self.catalog else {
            return;
        };
        if let (Some(schema), Some(version)) = (table.arrow_schema(), table.version()) {
            offers.offer(table.name(), schema, version);
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &PipelinePlan {
        &self.spec
    }

    /// Where its sinks report lost commits.
    pub fn contention(&self) -> &crate::sink::Contention {
        &self.contention
    }

    /// The counters this pipeline updates while it runs (for the status page).
    pub fn metrics(&self) -> Arc<PipelineMetrics> {
        self.metrics.clone()
    }

    pub(super) fn fail(&self, message: impl ToString) -> Error {
        Error::Pipeline {
            pipeline: self.spec.name.clone(),
            message: message.to_string(),
        }
    }

    /// `lakestream check`: the pipeline's SQL read, planned and tried against its
    /// source's columns (no table is opened); its output's column count.
    pub async fn check_sql(&self) -> Result<usize> {
        let Mode::Query(query) = &self.spec.mode else {
            return Ok(0);
        };
        // Checking does not wait out a registry outage: it reports it.
        let now = CancellationToken::new();
        now.cancel();
        let decoder = Decoder::for_source(&self.source.decoder, self.source.topic(), &now).await?;
        let schema = decoder.table_schema();
        let engine = Engine::compile(&self.spec, query, &self.plan.lookups, schema).await?;
        Ok(engine.output_schema().fields().len())
    }

    /// Open the tables, compile the SQL and restore the state; refusals (another
    /// pipeline's table, an incompatible schema) come here, before the reader joins the
    /// group, so a refused member never holds partitions.
    pub(super) async fn prepare(
        &self,
        partitions: &[i32],
        catch_up: Option<CatchUp>,
        shutdown: CancellationToken,
        decoder: &Decoder,
    ) -> Result<Prepared> {
        let p = &self.spec;
        let derive = Derive::new(p.derived.clone(), self.source.decoder.zone);
        // An upsert table's columns are all nullable: a delete carries only its key.
        let (mut output, schema) = match &p.mode {
            Mode::Append => (Output::Append, derive.schema(&decoder.table_schema())),
            Mode::Upsert { keys, delete_when } => {
                let schema = derive.schema(&decoder.tombstone_schema());
                let changes =
                    Changes::new(&p.name, keys.clone(), delete_when.clone(), schema.clone());
                (Output::Upsert(changes), schema)
            }
            Mode::Query(query) => {
                let engine =
                    Engine::compile(p, query, &self.plan.lookups, decoder.table_schema()).await?;
                let schema = engine.output_schema();
                (Output::Query(Box::new(engine)), schema)
            }
        };
        let sink_opts = self.sink_options(shutdown);
        let mut table = DeltaSink::open(&p.table, &schema, sink_opts.clone()).await?;
        let dlq_opts = SinkOptions {
            partition_by: Vec::new(),
            change_data_feed: false,
            ..sink_opts.clone()
        };
        let dead = DeltaSink::open(&p.dead_letter_table, &dead_letter_schema(), dlq_opts).await?;
        if let Some(v) = table.version() {
            crate::metrics::set_table_version(&p.table, v);
        }
        self.offer_to_catalog(&table);
        let ownership = crate::sink::Ownership {
            adopt: p.commit.adopt,
            shared_by_topics: p.commit.shared_by_topics,
        };
        table.check_owner(partitions, ownership).await?;
        if let Output::Query(engine) = &mut output {
            engine.set_partitions(partitions.to_vec());
            table.stream_state(engine).await?;
        }
        Ok(Prepared {
            sink_opts,
            table,
            dead,
            output,
            derive,
            catch_up,
        })
    }

    /// Commit what the reader sends until it stops (or, catching up, until the table
    /// holds the topic's ends); returns the final counters. Beside it, the lag shown
    /// keeps moving while no batch commits (a stalled pipeline falls behind visibly).
    pub(super) async fn consume(
        self,
        prepared: Prepared,
        feed: Feed,
        opts: RunOptions,
    ) -> Result<Snapshot> {
        let watch = watch_high_watermarks(feed.source.clone(), self.metrics.clone());
        tokio::select! {
            done = self.commit_loop(prepared, feed, opts) => done,
            never = watch => match never {},
        }
    }

    pub(super) async fn commit_loop(
        &self,
        prepared: Prepared,
        mut feed: Feed,
        opts: RunOptions,
    ) -> Result<Snapshot> {
        let Prepared {
            mut table,
            mut dead,
            mut output,
            derive,
            mut catch_up,
            ..
        } = prepared;
        let name = &self.spec.name;
        info!(pipeline = %name, topic = %feed.source.topic(), table = %self.spec.table, "pipeline started");
        self.metrics.set_state(PipelineState::Running);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut late_error = None;
        let mut resets_seen = 0;
        loop {
            let ready = tokio::select! {
                ready = feed.rx.recv() => ready,
                _ = tick.tick(), if catch_up.is_some() => {
                    // Other members commit too: look at the table as it is now.
                    if let Err(e) = table.refresh().await {
                        tracing::warn!(table = %self.spec.table, error = %crate::report::Report(&e), "cannot re-read the table");
                        continue;
                    }
                    self.check_caught_up(&mut catch_up, &mut table, &mut feed, &mut late_error).await;
                    continue;
                }
            };
            let Some(ready) = ready else { break };
            reread_after_reset(&feed, &mut resets_seen, [&mut table, &mut dead]).await?;
            let positions = ready.positions.clone();
            let committed = super::commit::commit(
                self,
                ready,
                (&mut table, &mut dead),
                &feed,
                (&mut output, &derive),
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
        Ok(self.metrics.snapshot(name, &self.spec.table))
    }

    /// Stop listening once caught up (the batches in flight still commit), or when the
    /// deadline passes (the run then fails with what is missing).
    pub(super) async fn check_caught_up(
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
            Err(e) => *late_error = Some(self.fail(crate::report::Report(&e))),
        }
        *catch_up = None;
        // The batches already queued still commit; the reader stops once no pipeline
        // of the source listens.
        feed.rx.close();
    }

    pub(super) fn sink_options(&self, shutdown: CancellationToken) -> SinkOptions {
        let (p, plan) = (&self.spec, &self.plan);
        SinkOptions {
            storage: plan.storage.storage.clone(),
            pipeline: p.name.clone(),
            topic: self.source.topic().to_string(),
            partition_by: p.partition_by.clone(),
            change_data_feed: p.changes_rows(),
            zstd_level: plan.storage.zstd_level,
            target_file_size: plan.storage.target_file_size,
            no_dictionary: p.no_dictionary(),
            retry_timeout: p.commit.retry_timeout,
            checkpoint_interval: plan.maintenance.checkpoint_interval,
            log_retention: plan.maintenance.log_retention,
            shutdown,
            contention: self.contention.clone(),
        }
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

/// Copy the broker's latest offsets into the metrics every second, for as long as the
/// pipeline commits.
async fn watch_high_watermarks(
    handle: SourceHandle,
    metrics: Arc<PipelineMetrics>,
) -> std::convert::Infallible {
    loop {
        metrics.set_high_watermarks(handle.high_watermarks());
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
