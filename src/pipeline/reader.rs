//! One read per source: the pipelines of a source in this process share one consumer
//! and one decode. Each keeps its own offsets in its own table (exactly once per table
//! holds as before): the reader starts each partition after the lowest offset any of
//! them holds, and each pipeline's commit drops what its table already has. A slow
//! pipeline slows the reader (bounded queues) instead of being left behind: memory is
//! bounded by the trigger sizes, never by the backlog.

use futures::future::{try_join_all, BoxFuture};
use futures::FutureExt;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::budget::ReaderBudget;
use super::catchup::CatchUp;
use super::stages::{decode_stage, GroupCommits, TablesOffsets, QUEUE};
use super::stages::{Feed, Ready};
use super::task::{Output, Pipeline, Prepared};
use super::RunOptions;
use crate::config::{KafkaPlan, ReaderPlan, SourcePlan, Topics};
use crate::decode::Decoder;
use crate::engine::Engine;
use crate::metrics::{PipelineMetrics, PipelineState, Snapshot};
use crate::source::{
    Bounds, Connection, ConsumerSettings, DataLossPolicy, KafkaSource, RawBatch, SourceError,
};
use crate::{Error, Result};

/// The pipelines of one source, started on one reader.
pub struct Started {
    /// Each pipeline's commit loop, by name.
    pub pipelines: Vec<(String, BoxFuture<'static, Result<Snapshot>>)>,
    /// The consumer and decode; an error here (data loss, a lost broker) ends the run.
    pub reader: BoxFuture<'static, Result<()>>,
}

/// The topics a multi-topic source reads now: its list, or the topics its pattern
/// matches.
pub async fn source_topics(kafka: &KafkaPlan, source: &SourcePlan) -> Result<Vec<String>> {
    let pattern = match &source.topics {
        Topics::Pattern(pattern) => pattern.clone(),
        Topics::List(topics) => return Ok(topics.clone()),
        Topics::One(topic) => return Ok(vec![topic.clone()]),
    };
    let probe = connection(kafka)?;
    tokio::task::spawn_blocking(move || crate::source::matching_topics(&probe, &pattern))
        .await
        .map_err(|cause| Error::Task {
            task: "listing topics".into(),
            cause,
        })?
        .map_err(Error::from)
}

/// One read of a source for its pipelines (all of one source and topic): what they
/// share, built once: the plan of the read, the decoder, the consumer group and the
/// connection (the Kafka secrets are read here).
struct Reader {
    plan: ReaderPlan,
    decoder: Decoder,
    group_id: String,
    connection: Connection,
}

impl Reader {
    async fn new(
        plan: ReaderPlan,
        kafka: &KafkaPlan,
        shutdown: &CancellationToken,
    ) -> Result<Self> {
        let topic = plan.source.topic();
        Ok(Self {
            decoder: Decoder::for_source(&plan.source.decoder, topic, shutdown).await?,
            group_id: plan.group_id(),
            connection: connection(kafka)?,
            plan,
        })
    }

    /// One consumer for several pipelines: a batch closes at the smallest trigger and
    /// size any of them asks for (see `ReaderPlan::trigger`).
    fn consumer_settings(
        &self,
        kafka: &KafkaPlan,
        pipelines: &[Pipeline],
        bounds: Option<&BTreeMap<i32, Bounds>>,
        budget: ReaderBudget,
    ) -> ConsumerSettings {
        let trigger = self.plan.trigger();
        ConsumerSettings {
            connection: self.connection.clone(),
            group_id: self.group_id.clone(),
            topic: self.plan.source.topic().to_string(),
            starting: kafka.starting_offsets.clone(),
            seek_rewind: kafka.seek_rewind,
            max_records: trigger.max_records,
            max_bytes: trigger.max_bytes.min(budget.batch_bytes),
            prefetch_bytes: budget.prefetch_bytes,
            fetch_bytes: budget.fetch_bytes,
            trigger_interval: trigger.interval,
            targets: bounds.map(|b| Arc::new(b.iter().map(|(&p, b)| (p, b.end)).collect())),
            data_loss: DataLossPolicy {
                fail: kafka.fail_on_data_loss,
                events: pipelines
                    .iter()
                    .map(|p| p.metrics.counters.data_loss_events.clone())
                    .collect(),
            },
        }
    }
}

/// Prepare `pipelines` (those `reader` names, in its order) and start their reader.
pub async fn start_source(
    reader: ReaderPlan,
    pipelines: Vec<Pipeline>,
    opts: RunOptions,
    readers: usize,
    shutdown: &CancellationToken,
) -> Result<Started> {
    let Some(first) = pipelines.first() else {
        return Ok(Started {
            pipelines: Vec::new(),
            reader: async { Ok(()) }.boxed(),
        });
    };
    let plan = first.plan.clone();
    let mut reader = Reader::new(reader, &plan.kafka, shutdown).await?;
    let (prepared, bounds) = prepare(&pipelines, &reader, opts, shutdown).await?;
    // Columns earlier runs added (schema evolution) are read again with their types.
    for p in prepared
        .iter()
        .filter(|p| matches!(p.output, Output::Append))
    {
        if let Some(schema) = p.table.arrow_schema() {
            reader.decoder.know_columns(&schema);
        }
    }
    let resets = Arc::new(AtomicU64::new(0));
    let store = TablesOffsets::new(&prepared, &reader.plan, resets.clone());
    let appends = prepared
        .iter()
        .filter(|p| !matches!(p.output, Output::Query(_)))
        .count();
    let budget = ReaderBudget::new(plan.memory_limit, readers, appends);
    budget.log(&reader.plan.source.name, plan.memory_limit, readers);
    let settings = reader.consumer_settings(&plan.kafka, &pipelines, bounds.as_ref(), budget);
    let (consumer, handle) = KafkaSource::new(settings, Box::new(store))?;
    info!(source = %reader.plan.source.name, topic = %reader.plan.source.topic(), pipelines = ?reader.plan.names(), "reading the source once for its pipelines");

    // The consumer stops on shutdown, or once every pipeline has stopped listening.
    let reading = shutdown.child_token();
    let alive = Arc::new(reading.clone().drop_guard());
    let group = Arc::new(GroupCommits::new(handle.clone(), pipelines.len()));
    let (raw_tx, raw_rx) = mpsc::channel::<RawBatch>(1);
    let (outputs, receivers): (Vec<_>, Vec<_>) = (0..pipelines.len())
        .map(|_| mpsc::channel::<Ready>(QUEUE))
        .unzip();
    let consume = tokio::task::spawn_blocking(move || consumer.run(raw_tx, reading));
    let metrics: Vec<_> = pipelines.iter().map(Pipeline::metrics).collect();
    let decode = decode_stage(reader.decoder, raw_rx, outputs, shutdown.clone());
    let reader = read(decode, consume, metrics).boxed();
    let pipelines = pipelines
        .into_iter()
        .zip(prepared)
        .zip(receivers)
        .enumerate()
        .map(|(slot, ((pipeline, prepared), rx))| {
            let feed = Feed {
                rx,
                source: handle.clone(),
                group: group.clone(),
                slot,
                resets: resets.clone(),
                _reading: alive.clone(),
            };
            let name = pipeline.spec.name.clone();
            (name, pipeline.consume(prepared, feed, opts).boxed())
        })
        .collect();
    Ok(Started { pipelines, reader })
}

/// The reader's task: the consumer thread and decoding (its CPU work on blocking
/// threads), so the supervisor that runs the reader owns both.
async fn read(
    decode: impl std::future::Future<Output = Result<()>>,
    consume: tokio::task::JoinHandle<std::result::Result<(), SourceError>>,
    metrics: Vec<Arc<PipelineMetrics>>,
) -> Result<()> {
    let (decoded, consumed) = tokio::join!(decode, consume);
    let consumed = consumed.map_err(|cause| Error::Task {
        task: "consumer thread".into(),
        cause,
    });
    // The consumer's error is the cause when both fail (decode ends when it does).
    let result = consumed.and_then(|c| c.map_err(Error::from)).and(decoded);
    if result.is_err() {
        for m in metrics {
            m.set_state(PipelineState::Failed);
        }
    }
    result
}

/// Prepare every pipeline of `reader` (tables, SQL, state, refusals) and, with
/// `--reset-to`, rewind their tables; with `--until-caught-up`, the topic's ends too.
async fn prepare(
    pipelines: &[Pipeline],
    reader: &Reader,
    opts: RunOptions,
    shutdown: &CancellationToken,
) -> Result<(Vec<Prepared>, Option<BTreeMap<i32, Bounds>>)> {
    let (connection, topic) = (&reader.connection, reader.plan.source.topic());
    let kafka = &pipelines[0].plan.kafka;
    let bounds = match opts.until_caught_up {
        true => Some(probe(connection, topic, "ends", crate::source::topic_bounds).await?),
        false => None,
    };
    let partitions = probe(
        connection,
        topic,
        "partitions",
        crate::source::topic_partitions,
    )
    .await?;
    let mut prepared = try_join_all(pipelines.iter().map(|p| {
        let catch_up = bounds
            .clone()
            .map(|b| catch_up(kafka, (connection, topic), b, opts));
        p.prepare(&partitions, catch_up, shutdown.clone(), &reader.decoder)
    }))
    .await?;
    if let Some(millis) = opts.reset_to {
        rewind(
            kafka,
            (connection, topic),
            millis,
            &reader.plan,
            &mut prepared,
        )
        .await?;
    }
    Ok((prepared, bounds))
}

/// `run --reset-to`: move every table back to the first record at or after `millis`
/// (never forward), before the reader positions anything.
async fn rewind(
    kafka: &KafkaPlan,
    (connection, topic): (&Connection, &str),
    millis: i64,
    reader: &ReaderPlan,
    prepared: &mut [Prepared],
) -> Result<()> {
    for (spec, p) in reader.pipelines.iter().zip(prepared.iter()) {
        if p.output.engine().is_some_and(Engine::keeps_state) {
            return Err(Error::Pipeline {
                pipeline: spec.name.clone(),
                message: "--reset-to refused: this pipeline keeps aggregate state that \
                          already counts the records it would read again (they would be \
                          counted twice). To recompute it, stop the pipeline, delete its \
                          table and run it again from kafka.starting_offsets"
                    .into(),
            });
        }
    }
    let rewind = kafka.seek_rewind;
    let starts = probe(
        connection,
        topic,
        "offsets at the reset time",
        move |c, t| crate::source::topic_offsets_for_time(c, t, millis, rewind),
    )
    .await?;
    let last: BTreeMap<i32, i64> = starts.iter().map(|(&p, &o)| (p, o - 1)).collect();
    for (spec, p) in reader.pipelines.iter().zip(prepared.iter_mut()) {
        let held = crate::sink::record_offsets(
            &p.sink_opts,
            &spec.table,
            &last,
            crate::source::Record::Lower,
            None,
        )
        .await?;
        info!(pipeline = %spec.name, table = %spec.table, reset_to = ?starts, now = ?held, "rewound: records from these offsets are ingested again");
        // The sink caches what the table held: read the lowered offsets.
        p.table.refresh().await?;
    }
    Ok(())
}

/// A short-lived, blocking read of the topic's metadata (`what` names it in errors):
/// its partitions (none while it does not exist) or the ends of each.
async fn probe<T: Send + 'static>(
    connection: &Connection,
    topic: &str,
    what: &str,
    read: impl FnOnce(&Connection, &str) -> std::result::Result<T, SourceError> + Send + 'static,
) -> Result<T> {
    let probe = connection.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || read(&probe, &topic))
        .await
        .map_err(|cause| Error::Task {
            task: format!("reading the topic's {what}"),
            cause,
        })?
        .map_err(Error::from)
}

fn catch_up(
    kafka: &KafkaPlan,
    (connection, topic): (&Connection, &str),
    bounds: BTreeMap<i32, Bounds>,
    opts: RunOptions,
) -> CatchUp {
    CatchUp::new(
        bounds,
        kafka.starting_offsets.clone(),
        opts.deadline,
        kafka.session_timeout,
        (connection.clone(), topic),
    )
}

/// How the readers connect: `kafka.security`, `kafka.options` and the isolation level.
fn connection(kafka: &KafkaPlan) -> Result<Connection> {
    Ok(Connection::new(kafka)?.with("isolation.level", kafka.isolation_level.as_str()))
}

#[cfg(test)]
mod tests {
    use crate::config::Plan;

    fn shipped(overrides: &[String]) -> Plan {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lakestream.toml");
        crate::config::load(&path, [], overrides).expect("shipped config loads")
    }

    #[test]
    fn pipelines_of_a_source_share_a_reader_and_a_group() {
        let plan = shipped(&[]);
        let names: Vec<String> = plan.pipelines.keys().cloned().collect();
        let readers = plan.readers(&names).unwrap();
        assert_eq!(readers.len(), 1, "the shipped pipelines read one source");
        let shared = readers[0].group_id();
        assert!(shared.contains("police_calls"), "{shared}");
        let one = &plan.readers(&names[..1]).unwrap()[0];
        assert_eq!(
            one.group_id(),
            format!("{}.{}", plan.kafka.group_id, names[0])
        );

        // A pipeline with its own group reads alone.
        let plan = shipped(&[format!("pipelines.{}.group_id=mine", names[0])]);
        let readers = plan.readers(&names).unwrap();
        assert_eq!(readers.len(), 2);
        assert!(readers
            .iter()
            .any(|r| r.names() == [names[0].clone()] && r.group_id() == "mine"));
    }
}
