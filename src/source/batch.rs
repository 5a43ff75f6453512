//! A micro-batch of raw Kafka records, payloads packed into one buffer.

use std::collections::BTreeMap;
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
}

#[derive(Debug, Clone)]
struct RawRecord {
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Range<usize>>,
    payload: Range<usize>,
}

/// First and last offset of one partition within a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
        }
    }

    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) {
        self.opened_at.get_or_insert_with(Instant::now);
        let key = key.map(|k| self.append(k));
        let payload = self.append(payload.unwrap_or_default());
        self.records.push(RawRecord {
            partition,
            offset,
            timestamp_ms,
            key,
            payload,
        });
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

    /// Drop the records of `partition` (its assignment was revoked).
    pub fn retain_partitions(&mut self, keep: impl Fn(i32) -> bool) {
        // Buffer space of dropped records is reclaimed when the batch is sent; revokes are rare.
        self.records.retain(|r| keep(r.partition));
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
        let ranges = b.offset_ranges();
        assert_eq!(ranges[&1], OffsetRange { first: 10, last: 11 });
        assert_eq!(ranges[&0], OffsetRange { first: 3, last: 3 });
        b.retain_partitions(|p| p == 0);
        assert_eq!(b.len(), 1);
        assert_eq!(b.offset(0), 3);
    }
}
