//! A micro-batch of raw Kafka records, payloads packed into one buffer.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// Raw records of one topic as consumed, before decoding. Payloads and keys share one
/// buffer so a batch of 100k records costs a handful of allocations, not 200k.
#[derive(Debug, Default)]
pub struct RawBatch {
    pub topic: Arc<str>,
    /// When the first record arrived.
    pub opened_at: Option<Instant>,
    buf: Vec<u8>,
    records: Vec<RawRecord>,
    /// Highest offset held per partition.
    last: BTreeMap<i32, i64>,
    /// The consumer's position per assigned partition when the batch closed: every
    /// offset below it is in this batch, an earlier one, or no record at all.
    pub positions: HashMap<i32, i64>,
    /// The topic's id (`TopicId::fingerprint`) as read after the batch closed: its
    /// records were fetched from that incarnation of the topic (None: no ids).
    pub topic_id: Option<i64>,
}

#[derive(Debug, Clone)]
struct RawRecord {
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Range<usize>>,
    payload: Range<usize>,
    /// The value was null (a Kafka tombstone), not merely empty.
    tombstone: bool,
}

/// When the batch's records were produced (Kafka timestamps, ms): the median record, the
/// 1st percentile (the p99 of latency once committed) and the oldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducedAt {
    pub p50: i64,
    pub p01: i64,
    pub oldest: i64,
}

/// First and last offset of one partition within a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    pub first: i64,
    pub last: i64,
}

impl RawBatch {
    pub fn new(topic: Arc<str>) -> Self {
        Self {
            topic,
            opened_at: None,
            buf: Vec::new(),
            records: Vec::new(),
            last: BTreeMap::new(),
            positions: HashMap::new(),
            topic_id: None,
        }
    }

    /// An empty batch sized like `previous`: a stream's batches are alike, so the buffers
    /// are allocated once at their final size instead of doubling (and copying) their way
    /// there, holding up to twice what they need.
    pub fn sized_like(previous: &RawBatch) -> Self {
        Self {
            buf: Vec::with_capacity(previous.buf.len() + previous.buf.len() / 8),
            records: Vec::with_capacity(previous.records.len() + previous.records.len() / 8),
            ..Self::new(previous.topic.clone())
        }
    }

    /// Add a record. A record at or below an offset the batch already holds for its
    /// partition means the consumer was re-positioned (a rebalance seeks to the table's
    /// offsets): the records from that offset on are dropped first, so a batch never
    /// holds an offset twice.
    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) {
        // One look-up per record (a few partitions: a B-tree beats hashing here).
        if self
            .last
            .insert(partition, offset)
            .is_some_and(|last| offset <= last)
        {
            self.records
                .retain(|r| r.partition != partition || r.offset < offset);
        }
        self.opened_at.get_or_insert_with(Instant::now);
        let key = key.map(|k| self.append(k));
        let tombstone = payload.is_none();
        let payload = self.append(payload.unwrap_or_default());
        self.records.push(RawRecord {
            partition,
            offset,
            timestamp_ms,
            key,
            payload,
            tombstone,
        });
    }

    /// The same records with each payload replaced by `rewrite(i)` (`None`: unchanged):
    /// a decoder that unwraps an envelope decodes the rewritten batch and keeps the
    /// original for dead letters.
    pub fn rewritten(&self, mut rewrite: impl FnMut(usize) -> Option<Vec<u8>>) -> RawBatch {
        let mut out = RawBatch::sized_like(self);
        out.positions = self.positions.clone();
        out.opened_at = self.opened_at;
        for (i, r) in self.records.iter().enumerate() {
            let payload = match (rewrite(i), r.tombstone) {
                (Some(bytes), _) => Some(bytes),
                (None, true) => None,
                (None, false) => Some(self.payload(i).to_vec()),
            };
            out.push(
                r.partition,
                r.offset,
                r.timestamp_ms,
                self.key(i),
                payload.as_deref(),
            );
        }
        out
    }

    /// The record's value was null (a tombstone).
    pub fn is_tombstone(&self, i: usize) -> bool {
        self.records[i].tombstone
    }

    fn append(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        start..self.buf.len()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes of payloads and keys held.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    pub fn payload(&self, i: usize) -> &[u8] {
        &self.buf[self.records[i].payload.clone()]
    }

    pub fn key(&self, i: usize) -> Option<&[u8]> {
        self.records[i].key.clone().map(|r| &self.buf[r])
    }

    pub fn partition(&self, i: usize) -> i32 {
        self.records[i].partition
    }

    pub fn offset(&self, i: usize) -> i64 {
        self.records[i].offset
    }

    pub fn timestamp_ms(&self, i: usize) -> Option<i64> {
        self.records[i].timestamp_ms
    }

    /// Quantiles of the records' timestamps (`None`: no record carries one).
    pub fn timestamp_quantiles(&self) -> Option<ProducedAt> {
        let mut ts: Vec<i64> = self.records.iter().filter_map(|r| r.timestamp_ms).collect();
        if ts.is_empty() {
            return None;
        }
        let mut at = |q: f64| {
            let i = ((ts.len() - 1) as f64 * q) as usize;
            *ts.select_nth_unstable(i).1
        };
        Some(ProducedAt {
            p50: at(0.5),
            p01: at(0.01),
            oldest: at(0.0),
        })
    }

    /// Drop the records of `partition` (its assignment was revoked).
    pub fn retain_partitions(&mut self, keep: impl Fn(i32) -> bool) {
        // Buffer space of dropped records is reclaimed when the batch is sent; revokes are rare.
        self.records.retain(|r| keep(r.partition));
        self.last.retain(|p, _| keep(*p));
    }

    /// The offset range each partition contributes.
    pub fn offset_ranges(&self) -> BTreeMap<i32, OffsetRange> {
        let mut ranges: BTreeMap<i32, OffsetRange> = BTreeMap::new();
        for r in &self.records {
            ranges
                .entry(r.partition)
                .and_modify(|range| {
                    range.first = range.first.min(r.offset);
                    range.last = range.last.max(r.offset);
                })
                .or_insert(OffsetRange {
                    first: r.offset,
                    last: r.offset,
                });
        }
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_records_and_reports_ranges() {
        let mut b = RawBatch::new("t".into());
        b.push(1, 10, Some(5), Some(b"k"), Some(b"{}"));
        b.push(0, 3, None, None, None);
        b.push(1, 11, None, None, Some(b"x"));
        assert_eq!(b.payload(0), b"{}");
        assert_eq!(b.key(0), Some(&b"k"[..]));
        assert_eq!(b.payload(1), b"");
        assert_eq!(b.key(1), None);
        assert!(b.is_tombstone(1) && !b.is_tombstone(0));
        let upper = b.rewritten(|i| (i == 0).then(|| b"{\"a\":1}".to_vec()));
        assert_eq!(upper.payload(0), b"{\"a\":1}");
        assert_eq!(upper.payload(2), b"x");
        assert!(upper.is_tombstone(1));
        let ranges = b.offset_ranges();
        assert_eq!(
            ranges[&1],
            OffsetRange {
                first: 10,
                last: 11
            }
        );
        assert_eq!(ranges[&0], OffsetRange { first: 3, last: 3 });
        let at = b.timestamp_quantiles().unwrap();
        assert_eq!((at.p50, at.p01, at.oldest), (5, 5, 5));
        b.retain_partitions(|p| p == 0);
        assert_eq!(b.len(), 1);
        assert_eq!(b.offset(0), 3);
    }

    #[test]
    fn a_rewound_partition_never_holds_an_offset_twice() {
        let mut b = RawBatch::new("t".into());
        for offset in 0..5 {
            b.push(0, offset, None, None, Some(b"a"));
            b.push(1, offset, None, None, Some(b"b"));
        }
        // Re-positioned to offset 2 after a rebalance: 2.. arrive again.
        for offset in 2..6 {
            b.push(0, offset, None, None, Some(b"c"));
        }
        let zero: Vec<i64> = (0..b.len())
            .filter(|&i| b.partition(i) == 0)
            .map(|i| b.offset(i))
            .collect();
        assert_eq!(zero, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(b.len(), 11);
        assert_eq!(b.payload(b.len() - 1), b"c");
    }
}
