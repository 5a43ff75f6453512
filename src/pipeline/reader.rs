//! One read per source: the pipelines of a source in this process share one consumer
//! and one decode. Each keeps its own offsets in its own table (exactly once per table
//! holds as before): the reader starts each partition after the lowest offset any of
//! them holds, and each pipeline's commit drops what its table already has. A slow
//! pipeline slows the reader (bounded queues) instead of being left behind: memory is
//! bounded by the trigger sizes, never by the backlog.

use futures::future::{try_join_all, BoxFuture};
use futures::FutureExt;

use super::stages::{decode_stage, TablesOffsets, QUEUE};
use super::*;
use crate::source::{Connection, ConsumerSettings, DataLossPolicy, KafkaSource};

/// The pipelines of one source, started on one reader.
pub struct Started {
    /// Each pipeline's commit loop, by name.
    pub pipelines: Vec<(String, BoxFuture<'static, Result<Snapshot>>)>,
    /// The consumer and decode; an error here (data loss, a lost broker) ends the run.
    pub reader: BoxFuture<'static, Result<()>>,
}

/// Which of `names` share a reader: those of one source, unless a pipeline names its
/// own consumer group (then it reads alone in that group, as it asked).
pub fn reader_groups(config: &Config, names: &[String]) -> Vec<Vec<String>> {
    let mut groups: BTreeMap<(String, Option<String>), Vec<String>> = BTreeMap::new();
    for name in names {
        let p = &config.pipelines[name];
        let key = (p.source.clone(), p.group_id.clone().map(|_| name.clone()));
        groups.entry(key).or_default().push(name.clone());
    }
    groups.into_values().collect()
}

/// The consumer group of a reader. One pipeline keeps its own group; several get one
/// named after the source and all of them, so a process running a different set of
/// pipelines never splits partitions with this one (each set must read every partition).
fn group_id(config: &Config, names: &[String]) -> String {
    match names {
        [one] => config.group_id(one),
        _ => {
            let mut sorted: Vec<&str> = names.iter().map(String::as_str).collect();
            sorted.sort_unstable();
            let source = &config.pipelines[&names[0]].source;
            format!("{}.{source}.{}", config.kafka.group_id, sorted.join("+"))
        }
    }
}

/// The topics a multi-topic source reads now: its list, or the topics its pattern
/// matches.
pub async fn source_topics(config: &Config, source: &str) -> Result<Vec<String>> {
    let s = &config.sources[source];
    let Some(pattern) = s.pattern(source)? else {
        return Ok(s.topics.clone());
    };
    let probe = connection(&config.kafka)?;
    tokio::task::spawn_blocking(move || crate::source::matching_topics(&probe, &pattern))
        .await
        .map_err(|cause| Error::Task {
            task: "listing topics".into(),
            cause,
        })?
        .map_err(Error::from)
}

/// Prepare `pipelines` (all of one source, see [`reader_groups`]) and start their reader.
pub async fn start_source(
    pipelines: Vec<Pipeline>,
    opts: RunOptions,
    shutdown: &CancellationToken,
) -> Result<Started> {
    let Some(first) = pipelines.first() else {
        return Ok(Started {
            pipelines: Vec::new(),
            reader: async { Ok(()) }.boxed(),
        });
    };
    let config = first.config.clone();
    let source_name = config.pipelines[&first.name].source.clone();
    let topic = config.sources[&source_name].topic.clone();
    let mut decoder = first.decoder()?;
    let names: Vec<String> = pipelines.iter().map(|p| p.name.clone()).collect();

    // Built once: it reads the Kafka secrets.
    let connection = connection(&config.kafka)?;
    let bounds = match opts.until_caught_up {
        true => Some(probe(&connection, &topic, "ends", crate::source::topic_bounds).await?),
        false => None,
    };
    let partitions = probe(
        &connection,
        &topic,
        "partitions",
        crate::source::topic_partitions,
    )
    .await?;
    let mut prepared = try_join_all(pipelines.iter().map(|p| {
        let catch_up = bounds
            .clone()
            .map(|b| catch_up(&config, (&connection, &topic), b, opts));
        p.prepare(&partitions, catch_up, shutdown.clone())
    }))
    .await?;
    if let Some(millis) = opts.reset_to {
        rewind(
            &config,
            (&connection, &topic),
            millis,
            &names,
            &mut prepared,
        )
        .await?;
    }
    // Columns earlier runs added (schema evolution) are read again with their types.
    for p in prepared
        .iter()
        .filter(|p| p.engine.is_none() && p.changes.is_none())
    {
        if let Some(schema) = p.table.arrow_schema() {
            decoder.know_columns(&schema);
        }
    }

    let resets = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let store = TablesOffsets {
        tables: prepared
            .iter()
            .map(|p| (p.sink_opts.clone(), p.p.table.clone()))
            .collect(),
        dead_letters: prepared
            .iter()
            .map(|p| (p.sink_opts.clone(), p.p.dead_letter_table()))
            .collect(),
        resets: resets.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let settings = consumer_settings(
        &config,
        connection,
        &names,
        &pipelines,
        &topic,
        bounds.as_ref(),
    );
    let (consumer, handle) = KafkaSource::new(settings, Box::new(store))?;
    info!(source = %source_name, topic = %topic, pipelines = ?names, "reading the source once for its pipelines");

    // The consumer stops on shutdown, or once every pipeline has stopped listening.
    let reading = shutdown.child_token();
    let alive = Arc::new(reading.clone().drop_guard());
    let group = Arc::new(GroupCommits::new(handle.clone(), pipelines.len()));
    let (raw_tx, raw_rx) = mpsc::channel::<RawBatch>(1);
    let (outputs, receivers): (Vec<_>, Vec<_>) = (0..pipelines.len())
        .map(|_| mpsc::channel::<Ready>(QUEUE))
        .unzip();
    let consume = tokio::task::spawn_blocking(move || consumer.run(raw_tx, reading));
    let decode = tokio::spawn(decode_stage(decoder, raw_rx, outputs));
    let metrics: Vec<_> = pipelines.iter().map(Pipeline::metrics).collect();
    let reader = async move {
        let result = join_reader(decode, consume).await;
        if result.is_err() {
            for m in metrics {
                m.set_state(PipelineState::Failed);
            }
        }
        result
    }
    .boxed();

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
            let name = pipeline.name.clone();
            (name, pipeline.consume(prepared, feed, opts).boxed())
        })
        .collect();
    Ok(Started { pipelines, reader })
}

async fn join_reader(
    decode: tokio::task::JoinHandle<Result<()>>,
    consume: tokio::task::JoinHandle<std::result::Result<(), crate::source::SourceError>>,
) -> Result<()> {
    let task = |task: &str| {
        let task = task.to_string();
        move |cause| Error::Task { task, cause }
    };
    let decoded = decode.await.map_err(task("decode"));
    let consumed = consume.await.map_err(task("consumer thread"));
    // The consumer's error is the cause when both fail (decode ends when it does).
    consumed?.map_err(Error::from)?;
    decoded?
}

/// `run --reset-to`: move every table back to the first record at or after `millis`
/// (never forward), before the reader positions anything.
async fn rewind(
    config: &Config,
    (connection, topic): (&Connection, &str),
    millis: i64,
    names: &[String],
    prepared: &mut [super::Prepared],
) -> Result<()> {
    for (name, p) in names.iter().zip(prepared.iter()) {
        if p.engine
            .as_ref()
            .is_some_and(crate::engine::Engine::keeps_state)
        {
            return Err(Error::Pipeline {
                pipeline: name.clone(),
                message: "--reset-to refused: this pipeline keeps aggregate state that \
                          already counts the records it would read again (they would be \
                          counted twice). To recompute it, stop the pipeline, delete its \
                          table and run it again from kafka.starting_offsets"
                    .into(),
            });
        }
    }
    let rewind = config.kafka.seek_rewind;
    let starts = probe(
        connection,
        topic,
        "offsets at the reset time",
        move |c, t| crate::source::topic_offsets_for_time(c, t, millis, rewind),
    )
    .await?;
    let last: BTreeMap<i32, i64> = starts.iter().map(|(&p, &o)| (p, o - 1)).collect();
    for (name, p) in names.iter().zip(prepared.iter_mut()) {
        let held = crate::sink::record_offsets(
            &p.sink_opts,
            &p.p.table,
            &last,
            crate::source::Record::Lower,
            None,
        )
        .await?;
        info!(pipeline = %name, table = %p.p.table, reset_to = ?starts, now = ?held, "rewound: records from these offsets are ingested again");
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
    read: impl FnOnce(&Connection, &str) -> std::result::Result<T, crate::source::SourceError>
        + Send
        + 'static,
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
    config: &Config,
    (connection, topic): (&Connection, &str),
    bounds: BTreeMap<i32, crate::source::Bounds>,
    opts: RunOptions,
) -> CatchUp {
    let kafka = &config.kafka;
    let session_ms = kafka
        .options
        .get("session.timeout.ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(45_000); // librdkafka's default
    CatchUp::new(
        bounds,
        kafka.starting_offsets.clone(),
        opts.deadline,
        std::time::Duration::from_millis(session_ms),
        (connection.clone(), topic),
    )
}

/// How the readers connect: `kafka.security`, `kafka.options` and the isolation level.
fn connection(kafka: &crate::config::KafkaConfig) -> Result<Connection> {
    Ok(Connection::new(kafka)?.with("isolation.level", kafka.isolation_level.as_str()))
}

/// One consumer for several pipelines: a batch closes at the smallest trigger and size
/// any of them asks for, so none waits longer or holds more than it configured.
fn consumer_settings(
    config: &Config,
    connection: Connection,
    names: &[String],
    pipelines: &[Pipeline],
    topic: &str,
    bounds: Option<&BTreeMap<i32, crate::source::Bounds>>,
) -> ConsumerSettings {
    let kafka = &config.kafka;
    let each = || names.iter().map(|n| &config.pipelines[n]);
    ConsumerSettings {
        connection,
        group_id: group_id(config, names),
        topic: topic.to_string(),
        starting: kafka.starting_offsets.clone(),
        seek_rewind: kafka.seek_rewind,
        max_records: each().map(|p| p.max_offsets_per_trigger).min().unwrap_or(1),
        max_bytes: each().map(|p| p.max_bytes_per_trigger).min().unwrap_or(1),
        trigger_interval: each().map(|p| p.trigger_interval).min().unwrap_or_default(),
        targets: bounds.map(|b| Arc::new(b.iter().map(|(&p, b)| (p, b.end)).collect())),
        data_loss: DataLossPolicy {
            fail: kafka.fail_on_data_loss,
            events: pipelines
                .iter()
                .map(|p| p.metrics.data_loss_events.clone())
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_of_a_source_share_a_reader_and_a_group() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lakestream.toml");
        let mut config = crate::config::load(&path, [], &[]).expect("shipped config loads");
        let names: Vec<String> = config.pipelines.keys().cloned().collect();
        let groups = reader_groups(&config, &names);
        assert_eq!(groups.len(), 1, "the shipped pipelines read one source");
        let shared = group_id(&config, &groups[0]);
        assert!(shared.contains("police_calls"), "{shared}");
        assert_eq!(group_id(&config, &names[..1]), config.group_id(&names[0]));

        // A pipeline with its own group reads alone.
        config.pipelines.get_mut(&names[0]).unwrap().group_id = Some("mine".into());
        let groups = reader_groups(&config, &names);
        assert_eq!(groups.len(), 2);
        assert!(groups.iter().any(|g| g == &vec![names[0].clone()]));
    }
}
