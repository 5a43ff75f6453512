//! Where each partition of a topic begins and ends, read from the broker.
//!
//! The end is the offset after the last record (the high watermark: on a transactional
//! topic the last offset may be a commit marker that no consumer ever sees, so "caught
//! up" compares positions against it, never the last record's offset).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::Statistics;

use super::{Connection, KafkaContext, SourceError};

/// First retained offset and end of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub low: i64,
    pub end: i64,
}

/// The group name of short-lived readers (nothing is ever committed under it).
pub(crate) const PROBE_GROUP: &str = "lakestream-probe";

/// Partition ids of `topic` (empty when it does not exist).
pub fn topic_partitions(connection: &Connection, topic: &str) -> Result<Vec<i32>, SourceError> {
    let consumer = connection.consumer(PROBE_GROUP, &[])?;
    partitions_of(&consumer, topic)
}

fn partitions_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Result<Vec<i32>, SourceError> {
    // The whole cluster's metadata: asking for one topic by name makes a broker with
    // auto.create.topics.enable create it (with the broker's partition count), and a
    // probe must never create a topic.
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
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
    connection: &Connection,
    topic: &str,
) -> Result<BTreeMap<i32, Bounds>, SourceError> {
    let consumer = end_probe(connection)?;
    let mut bounds = BTreeMap::new();
    for p in partitions_of(&consumer, topic)? {
        let (low, end) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(SourceError::kafka(topic))?;
        bounds.insert(p, Bounds { low, end });
    }
    Ok(bounds)
}

/// The end of one partition now.
pub fn partition_end(
    connection: &Connection,
    topic: &str,
    partition: i32,
) -> Result<i64, SourceError> {
    let consumer = end_probe(connection)?;
    let (_, end) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map_err(SourceError::kafka(topic))?;
    Ok(end)
}

/// The first retained offset (low watermark) of each of `partitions`, in one
/// ListOffsets(earliest) request per leader through `client` (a consumer with no
/// assignment answers at once: a consumer's own connections queue requests behind the
/// fetch the broker is holding).
pub fn first_offsets<C: ConsumerContext>(
    client: &BaseConsumer<C>,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> Result<BTreeMap<i32, i64>, SourceError> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions {
        // Offset::Beginning is the "timestamp" -2: the protocol's "earliest".
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .map_err(SourceError::kafka(topic))?;
    }
    let answer = client
        .offsets_for_times(tpl, Duration::from_secs(10))
        .map_err(SourceError::kafka(topic))?;
    Ok(answer
        .elements_for_topic(topic)
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(low) if e.error().is_ok() => Some((e.partition(), low)),
            _ => None,
        })
        .collect())
}

/// A reader whose ListOffsets(latest) answers the high watermark. Under read_committed
/// the broker answers the last stable offset instead, which stops short of an open
/// transaction and of the committed records behind it: "caught up" there would end a
/// backfill before records that are in the log. (tansu 0.6 answers ListOffsets(latest)
/// with a trailing offset; against it a catch-up can end early, see docs/operations.md.)
fn end_probe(connection: &Connection) -> Result<BaseConsumer<KafkaContext>, SourceError> {
    connection.consumer(PROBE_GROUP, &[("isolation.level", "read_uncommitted")])
}

/// The high watermark per partition of `topic` that librdkafka's statistics carry (the
/// one the last fetch response reported).
pub(super) fn fetched_highs(statistics: &Statistics, topic: &str) -> Vec<(i32, i64)> {
    statistics.topics.get(topic).map_or_else(Vec::new, |t| {
        t.partitions
            .iter()
            .filter(|(&p, partition)| p >= 0 && partition.hi_offset >= 0)
            .map(|(&p, partition)| (p, partition.hi_offset))
            .collect()
    })
}
