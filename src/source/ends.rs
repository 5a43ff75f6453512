//! Where each partition of a topic begins and ends, read from the broker.
//!
//! The end is the offset after the last record (the high watermark: on a transactional
//! topic the last offset may be a commit marker that no consumer ever sees, so "caught
//! up" compares positions against it, never the last record's offset).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, Statistics, TopicPartitionList};
use tracing::warn;

use super::SourceError;

/// First retained offset and end of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub low: i64,
    pub end: i64,
}

/// How long the end probe waits for the broker's answers before it settles.
const PROBE_PATIENCE: Duration = Duration::from_secs(5);

/// Client settings for short-lived readers of a topic (no group, nothing committed).
pub fn probe_config(brokers: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in options {
        config.set(k, v);
    }
    config
        .set("group.id", "lakestream-probe")
        .set("enable.auto.commit", "false")
        .set("statistics.interval.ms", "100");
    config
}

/// Partition ids of `topic` (empty when it does not exist).
pub fn topic_partitions(config: &ClientConfig, topic: &str) -> Result<Vec<i32>, SourceError> {
    let consumer: BaseConsumer = config.create().map_err(SourceError::kafka(topic))?;
    partitions_of(&consumer, topic)
}

fn partitions_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Result<Vec<i32>, SourceError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(SourceError::kafka(topic))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Bounds of every partition of `topic` (empty when the topic does not exist).
pub fn topic_bounds(
    config: &ClientConfig,
    topic: &str,
) -> Result<BTreeMap<i32, Bounds>, SourceError> {
    let consumer = probe_consumer(config, topic)?;
    let mut reported = HashMap::new();
    for p in partitions_of(&consumer, topic)? {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(SourceError::kafka(topic))?;
        reported.insert(p, (low, high));
    }
    let highs: HashMap<i32, i64> = reported.iter().map(|(&p, &(_, h))| (p, h)).collect();
    let ends = fetched_ends(&consumer, topic, &highs)?;
    Ok(reported
        .into_iter()
        .map(|(p, (low, high))| {
            let end = ends.get(&p).copied().unwrap_or(high);
            (p, Bounds { low, end })
        })
        .collect())
}

/// The end of one partition whose reported high watermark is `high`.
pub fn partition_end(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    high: i64,
) -> Result<i64, SourceError> {
    let consumer = probe_consumer(config, topic)?;
    let ends = fetched_ends(&consumer, topic, &HashMap::from([(partition, high)]))?;
    Ok(ends.get(&partition).copied().unwrap_or(high))
}

/// Collects the high watermarks that fetch responses carry (librdkafka's statistics).
#[derive(Default)]
struct FetchedHighs {
    topic: String,
    highs: Mutex<HashMap<i32, i64>>,
}

/// The high watermark per partition of `topic` that librdkafka's statistics carry (the
/// one the last fetch response reported).
pub fn fetched_highs(statistics: &Statistics, topic: &str) -> Vec<(i32, i64)> {
    statistics.topics.get(topic).map_or_else(Vec::new, |t| {
        t.partitions
            .iter()
            .filter(|(&p, partition)| p >= 0 && partition.hi_offset >= 0)
            .map(|(&p, partition)| (p, partition.hi_offset))
            .collect()
    })
}

impl ClientContext for FetchedHighs {
    fn stats(&self, statistics: Statistics) {
        let mut highs = self.highs.lock().unwrap_or_else(|e| e.into_inner());
        highs.extend(fetched_highs(&statistics, &self.topic));
    }
}

impl ConsumerContext for FetchedHighs {}

fn probe_consumer(
    config: &ClientConfig,
    topic: &str,
) -> Result<BaseConsumer<FetchedHighs>, SourceError> {
    let context = FetchedHighs {
        topic: topic.to_string(),
        highs: Mutex::default(),
    };
    config
        .create_with_context(context)
        .map_err(SourceError::kafka(topic))
}

/// Fetch each partition from its reported high watermark and take the end the fetch
/// answers report.
///
/// tansu 0.6 answers ListOffsets(latest) with a wrong offset (seen: the base offset of
/// the last record batch, and 1 for a topic of thousands of records), while its fetch
/// responses carry the true high watermark. Kafka and Redpanda report the same end both
/// ways, and this costs one fetch round trip per partition.
fn fetched_ends(
    consumer: &BaseConsumer<FetchedHighs>,
    topic: &str,
    highs: &HashMap<i32, i64>,
) -> Result<HashMap<i32, i64>, SourceError> {
    let mut ends = highs.clone();
    if highs.is_empty() {
        return Ok(ends);
    }
    let mut tpl = TopicPartitionList::new();
    for (&p, &h) in highs {
        tpl.add_partition_offset(topic, p, Offset::Offset(h))
            .map_err(SourceError::kafka(topic))?;
    }
    consumer.assign(&tpl).map_err(SourceError::kafka(topic))?;
    let started = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let end = ends.entry(m.partition()).or_insert(0);
                *end = (*end).max(m.offset() + 1);
            }
            None => {}
            Some(Err(e)) => return Err(SourceError::kafka(topic)(e)),
        }
        let fetched = consumer
            .context()
            .highs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if highs.keys().all(|p| fetched.contains_key(p)) {
            for (p, h) in fetched {
                if let Some(end) = ends.get_mut(&p) {
                    *end = (*end).max(h);
                }
            }
            return Ok(ends);
        }
        if started.elapsed() > PROBE_PATIENCE {
            warn!(
                topic,
                "no fetch answer in time; using the reported high watermarks"
            );
            return Ok(ends);
        }
    }
}
