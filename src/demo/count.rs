//! `lakestream count-topic`: the broker's ceiling for the benchmark. A consumer with the
//! pipeline's client settings that reads every partition to its end and only counts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::source::{Connection, ReadError, SourceError};

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CountReport {
    pub messages: u64,
    pub bytes: u64,
    /// From the first message to the last.
    pub seconds: f64,
}

pub fn count_topic(connection: &Connection, topic: &str) -> Result<CountReport, SourceError> {
    let consumer = connection.consumer("lakestream-count-topic", &[])?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(SourceError::kafka(topic))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(SourceError::kafka(topic))?;
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(SourceError::kafka(topic))?;
    }
    consumer.assign(&tpl).map_err(SourceError::kafka(topic))?;
    let (mut messages, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut next: BTreeMap<i32, i64> = partitions.iter().map(|&p| (p, 0)).collect();
    let mut idle = Instant::now();
    loop {
        if next.iter().all(|(p, n)| *n >= ends[p]) {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                messages += 1;
                bytes += m.payload_len() as u64;
                next.insert(m.partition(), m.offset() + 1);
                idle = Instant::now();
            }
            Some(Err(e)) => return Err(SourceError::kafka(topic)(e)),
            None if idle.elapsed() > Duration::from_secs(30) => {
                return Err(SourceError::read(topic)(ReadError::NoAnswer {
                    what: "reading to the end".into(),
                    seconds: 30,
                }))
            }
            None => {
                // A topic that ends with a commit marker (or aborted or compacted records)
                // has offsets no message shows: the consumer's position passes them.
                if let Ok(positions) = consumer.position() {
                    for e in positions.elements_for_topic(topic) {
                        if let (Offset::Offset(o), Some(n)) =
                            (e.offset(), next.get_mut(&e.partition()))
                        {
                            *n = (*n).max(o);
                        }
                    }
                }
            }
        }
    }
    Ok(CountReport {
        messages,
        bytes,
        seconds: first.map_or(0.0, |t| t.elapsed().as_secs_f64()),
    })
}
