//! Where each partition of a topic begins and ends, read from the broker.
//!
//! The end is the offset after the last record (the high watermark: on a transactional
//! topic the last offset may be a commit marker that no consumer ever sees, so "caught
//! up" compares positions against it, never the last record's offset).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tracing::warn;

use super::SourceError;

/// First retained offset and end of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub low: i64,
    pub end: i64,
}

/// How long the end probe reads before it settles for what it has seen.
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
        .set("enable.partition.eof", "true");
    config
}

/// Bounds of every partition of `topic` (empty when the topic does not exist).
pub fn topic_bounds(
    config: &ClientConfig,
    topic: &str,
) -> Result<BTreeMap<i32, Bounds>, SourceError> {
    let consumer: BaseConsumer = config.create().map_err(SourceError::kafka(topic))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(SourceError::kafka(topic))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut reported = HashMap::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(SourceError::kafka(topic))?;
        reported.insert(p, (low, high));
    }
    let highs: HashMap<i32, i64> = reported.iter().map(|(&p, &(_, h))| (p, h)).collect();
    let ends = read_to_end(&consumer, topic, &highs)?;
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
    let consumer: BaseConsumer = config.create().map_err(SourceError::kafka(topic))?;
    let ends = read_to_end(&consumer, topic, &HashMap::from([(partition, high)]))?;
    Ok(ends.get(&partition).copied().unwrap_or(high))
}

/// Read each partition from its reported high watermark to the end of the log.
///
/// tansu 0.6 answers ListOffsets(latest) with the base offset of the last record batch,
/// so its high watermark can be up to a batch short. Kafka and Redpanda report the true
/// end: the fetch returns nothing and this costs one round trip per partition.
fn read_to_end(
    consumer: &BaseConsumer,
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
    let mut open: Vec<i32> = highs.keys().copied().collect();
    let started = Instant::now();
    while !open.is_empty() {
        if started.elapsed() > PROBE_PATIENCE {
            warn!(topic, partitions = ?open, "end of partition not confirmed in time; using the reported high watermark");
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let end = ends.entry(m.partition()).or_insert(0);
                *end = (*end).max(m.offset() + 1);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => open.retain(|&o| o != p),
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange))) => {
                // Retention moved past the reported end meanwhile: nothing left to see.
                break;
            }
            Some(Err(e)) => return Err(SourceError::kafka(topic)(e)),
            None => {}
        }
    }
    Ok(ends)
}
