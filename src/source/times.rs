//! Offsets by time: where a partition's records reach a timestamp, for a configured
//! start time and `run --reset-to`.
//!
//! The answer comes from the standard OffsetsForTimes request and is checked by reading
//! the records around it: the record at the offset must be at or after the time, the one
//! before it earlier. tansu 0.6 answers every such request with offset 0; where the
//! check fails, the partition is read from its start to find the offset (with a warning
//! that names the broker's answer), so a wrong answer never moves a start silently.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::{
    Bounds, Connection, KafkaContext, OffsetStore, ReadError, Record, SourceError, TopicId,
};
use crate::config::{Start, StartingOffsets};

/// How many offsets before a broker's answer are read to find the record before it.
const LOOK_BACK: i64 = 16;

/// A read that makes no progress for this long fails.
const READ_PATIENCE: Duration = Duration::from_secs(30);

/// The first offset of each partition of `bounds` whose record's timestamp is at or
/// after `millis` (its end when there is none). `rewind`: see `kafka.seek_rewind`.
pub fn offsets_for_time(
    connection: &Connection,
    topic: &str,
    millis: i64,
    bounds: &BTreeMap<i32, Bounds>,
    rewind: u32,
) -> Result<BTreeMap<i32, i64>, SourceError> {
    let consumer = connection.consumer(super::ends::PROBE_GROUP, &[])?;
    let mut tpl = TopicPartitionList::new();
    for &p in bounds.keys() {
        tpl.add_partition_offset(topic, p, Offset::Offset(millis))
            .map_err(SourceError::kafka(topic))?;
    }
    let found = consumer
        .offsets_for_times(tpl, Duration::from_secs(10))
        .map_err(SourceError::kafka(topic))?;
    let mut out = BTreeMap::new();
    for (&p, b) in bounds {
        let answer = match found.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            Some(Offset::End) => Some(b.end),
            _ => None,
        };
        let reader = Reader {
            consumer: &consumer,
            topic,
            partition: p,
            bounds: *b,
            rewind,
        };
        let checked = match answer {
            Some(o) if (b.low..=b.end).contains(&o) && reader.is_first_at(o, millis)? => o,
            _ => {
                warn!(topic, partition = p, ?answer, millis, "the broker answered OffsetsForTimes wrongly; reading the partition to find the offset");
                reader.scan_for(millis)?
            }
        };
        out.insert(p, checked);
    }
    Ok(out)
}

/// [`offsets_for_time`] for every partition of `topic`.
pub fn topic_offsets_for_time(
    connection: &Connection,
    topic: &str,
    millis: i64,
    rewind: u32,
) -> Result<BTreeMap<i32, i64>, SourceError> {
    let bounds = super::topic_bounds(connection, topic)?;
    offsets_for_time(connection, topic, millis, &bounds, rewind)
}

/// Record in the tables, before anything is read, the start of every partition whose
/// configured start is a time and that the tables have never recorded (members racing
/// here all end with the first one's starts). Partitions added later start at their
/// first record (see `SourceContext::start_of`).
pub(super) fn record_time_starts<C: rdkafka::ClientContext>(
    connection: &Connection,
    topic: &str,
    (starting, rewind): (&StartingOffsets, u32),
    store: &dyn OffsetStore,
    client: &rdkafka::client::Client<C>,
) -> Result<(), SourceError> {
    let is_time = |s: &Start| matches!(s, Start::Time(_));
    if !starting.partitions.values().any(is_time) && !is_time(&starting.others) {
        return Ok(());
    }
    let mut times: BTreeMap<i64, Vec<i32>> = BTreeMap::new();
    let bounds = super::topic_bounds(connection, topic)?;
    for &p in bounds.keys() {
        if let Start::Time(millis) = starting.for_partition(p) {
            times.entry(millis).or_default().push(p);
        }
    }
    if times.is_empty() {
        return Ok(());
    }
    let read = |e| SourceError::read(topic)(e);
    let id = super::topic_id(client, topic, Duration::from_secs(10))?.map(TopicId::fingerprint);
    let all: Vec<i32> = times.values().flatten().copied().collect();
    let held = store
        .committed(&all, id)
        .map_err(|e| read(ReadError::Tables(e)))?;
    let mut last = BTreeMap::new();
    for (millis, partitions) in times {
        let missing: BTreeMap<i32, Bounds> = partitions
            .iter()
            .filter(|p| held.get(p).is_none_or(|c| c.lowest.is_none()))
            .map(|p| (*p, bounds[p]))
            .collect();
        if missing.is_empty() {
            continue;
        }
        for (p, start) in offsets_for_time(connection, topic, millis, &missing, rewind)? {
            info!(
                topic,
                partition = p,
                millis,
                start,
                "starting at the first record of the configured time"
            );
            last.insert(p, start - 1);
        }
    }
    if !last.is_empty() {
        store
            .record(&last, Record::Start, id)
            .map_err(|e| read(ReadError::Tables(e)))?;
    }
    Ok(())
}

/// Reads one partition's timestamps.
struct Reader<'a> {
    consumer: &'a BaseConsumer<KafkaContext>,
    topic: &'a str,
    partition: i32,
    bounds: Bounds,
    rewind: u32,
}

impl Reader<'_> {
    /// Whether `offset` is the first record at or after `millis`: its record is (or it
    /// is the end) and the record before it is not.
    fn is_first_at(&self, offset: i64, millis: i64) -> Result<bool, SourceError> {
        // The offsets just before it may be no records (commit markers, compacted or
        // aborted records), and the answer itself may be one: the last record before
        // it and the first record from it are what count.
        let from = (offset - LOOK_BACK).max(self.bounds.low);
        let mut before_ok = true;
        let mut at_ok = offset == self.bounds.end;
        self.read_from(from, |o, ts| {
            if o < offset {
                before_ok = ts.is_some_and(|t| t < millis);
                return false;
            }
            at_ok = ts.is_some_and(|t| t >= millis);
            true
        })?;
        Ok(before_ok && at_ok)
    }

    /// The first record at or after `millis`, read from the partition's start.
    fn scan_for(&self, millis: i64) -> Result<i64, SourceError> {
        let mut found = self.bounds.end;
        let mut seen = 0u64;
        self.read_from(self.bounds.low, |o, ts| {
            seen += 1;
            if seen.is_multiple_of(1_000_000) {
                info!(
                    topic = self.topic,
                    partition = self.partition,
                    offset = o,
                    "still looking for the start time"
                );
            }
            let hit = ts.is_some_and(|t| t >= millis);
            if hit {
                found = o;
            }
            hit
        })?;
        Ok(found)
    }

    /// Call `visit(offset, timestamp)` for each record from `from` on (positioned
    /// `rewind` records earlier, records before `from` skipped) until it returns true or
    /// the partition's end is reached.
    fn read_from(
        &self,
        from: i64,
        mut visit: impl FnMut(i64, Option<i64>) -> bool,
    ) -> Result<(), SourceError> {
        let err = SourceError::kafka(self.topic);
        if from >= self.bounds.end {
            return Ok(());
        }
        let seek = (from - i64::from(self.rewind)).max(self.bounds.low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.topic, self.partition, Offset::Offset(seek))
            .map_err(SourceError::kafka(self.topic))?;
        self.consumer.assign(&tpl).map_err(err)?;
        let mut last_progress = Instant::now();
        loop {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) if m.partition() == self.partition => {
                    last_progress = Instant::now();
                    let offset = m.offset();
                    if offset >= from && visit(offset, m.timestamp().to_millis()) {
                        return Ok(());
                    }
                    if offset + 1 >= self.bounds.end {
                        return Ok(());
                    }
                }
                Some(Ok(_)) | None => {}
                Some(Err(e)) => return Err(SourceError::kafka(self.topic)(e)),
            }
            if last_progress.elapsed() > READ_PATIENCE {
                return Err(SourceError::read(self.topic)(ReadError::NoAnswer {
                    what: format!(
                        "partition {}: reading records from offset {from} to find the start \
                         time",
                        self.partition
                    ),
                    seconds: READ_PATIENCE.as_secs(),
                }));
            }
        }
    }
}
