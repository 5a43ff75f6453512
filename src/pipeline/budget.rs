//! `memory_limit` turned into the sizes that bound a reader's bytes in flight.
//!
//! A reader holds at most a fixed number of batch generations at once, whatever the
//! backlog: librdkafka's prefetch queue, the raw batch filling, one queued, one
//! decoding (raw and decoded side by side), one decoded batch queued per pipeline and
//! the one each pipeline commits (its partition split and Parquet buffers). So the peak
//! grows with two sizes only, the raw batch and the prefetch, and both are derived here
//! from the budget. Measured on the SF calls (1M backlog, all four shipped pipelines,
//! anonymous memory): about 79 MiB fixed + 4.9 x the batch bytes + 1.4 x the prefetch
//! bytes; an appending pipeline adds about one batch (its split and its Parquet).

use tracing::info;

/// A reader's share of `memory_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReaderBudget {
    /// A batch closes once its payloads reach this many bytes.
    pub(super) batch_bytes: usize,
    /// librdkafka's prefetch queue (`queued.max.messages.kbytes`), in bytes.
    pub(super) prefetch_bytes: usize,
    /// One fetch response (`fetch.max.bytes`); one may be in flight per broker besides
    /// the queue.
    pub(super) fetch_bytes: usize,
}

/// librdkafka refuses a `fetch.max.bytes` below `message.max.bytes` (1,000,000 by
/// default), and a record larger than a batch still closes one on its own.
const MIN_FETCH: usize = 1 << 20;
/// librdkafka's own defaults are the ceilings: a fetch must stay under
/// `receive.message.max.bytes` (100 MB), the queue under its 2 GiB maximum.
const MAX_FETCH: usize = 50 << 20;
const MAX_PREFETCH: usize = 1 << 30;

impl ReaderBudget {
    /// The share of one of `readers` readers in `limit` bytes; `appends` of its
    /// pipelines write the decoded rows themselves (append or upsert).
    pub(super) fn new(limit: u64, readers: usize, appends: usize) -> Self {
        let share = usize::try_from(limit / readers.max(1) as u64).unwrap_or(usize::MAX);
        // 4.9 batches with one appending pipeline, one more per further one; 1.4 x the
        // prefetch: the two together stay under 7/8 of the share, the rest is slack for
        // what varies with the data (a batch spanning many table partitions).
        let batch_bytes = share / (6 + appends.max(1));
        let prefetch = share / 8;
        Self {
            batch_bytes: batch_bytes.max(MIN_FETCH),
            prefetch_bytes: (prefetch / 2).clamp(MIN_FETCH, MAX_PREFETCH),
            fetch_bytes: (prefetch / 8).clamp(MIN_FETCH, MAX_FETCH),
        }
    }

    /// What one reader holds at least, whatever the budget: the model of the module doc
    /// at the smallest sizes librdkafka accepts.
    pub(super) fn floor(appends: usize) -> u64 {
        let smallest = Self {
            batch_bytes: MIN_FETCH,
            prefetch_bytes: MIN_FETCH,
            fetch_bytes: MIN_FETCH,
        };
        smallest.peak(appends)
    }

    /// The bytes in flight the module doc's model gives these sizes.
    fn peak(&self, appends: usize) -> u64 {
        let batches = 4.9 + appends.saturating_sub(1) as f64;
        let peak = batches * self.batch_bytes as f64
            + 1.4 * (self.prefetch_bytes + self.fetch_bytes) as f64;
        peak as u64
    }

    pub(super) fn log(&self, source: &str, limit: u64, readers: usize) {
        let floor = Self::floor(1) * readers as u64;
        if floor > limit {
            tracing::warn!(
                source,
                memory_limit = %bytesize::ByteSize(limit),
                readers,
                "memory_limit cannot bound {readers} readers: each holds at least {} \
                 (one fetch, one batch), so they may use {} together; raise memory_limit \
                 to at least that, or read fewer topics per process",
                bytesize::ByteSize(Self::floor(1)),
                bytesize::ByteSize(floor)
            );
        }
        info!(
            source,
            memory_limit = %bytesize::ByteSize(limit),
            readers,
            batch = %bytesize::ByteSize(self.batch_bytes as u64),
            prefetch = %bytesize::ByteSize(self.prefetch_bytes as u64),
            "memory budget of the reader"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_default_budget_gives_one_reader_a_seventh_per_batch() {
        let b = ReaderBudget::new(256 * MIB, 1, 1);
        assert_eq!(b.batch_bytes as u64, 256 * MIB / 7);
        assert_eq!(b.prefetch_bytes as u64, 16 * MIB);
        assert_eq!(b.fetch_bytes as u64, 4 * MIB);
        // The model of the module doc stays inside the share.
        let peak = 4.9 * b.batch_bytes as f64 + 1.4 * (b.prefetch_bytes * 2) as f64;
        assert!(peak < (256 * MIB) as f64 * 0.875, "{peak}");
    }

    #[test]
    fn readers_and_writers_split_the_budget() {
        let one = ReaderBudget::new(256 * MIB, 1, 1);
        let four = ReaderBudget::new(256 * MIB, 4, 1);
        assert_eq!(four.batch_bytes, one.batch_bytes / 4);
        let writers = ReaderBudget::new(256 * MIB, 1, 4);
        assert!(writers.batch_bytes < one.batch_bytes * 3 / 4);
    }

    #[test]
    fn a_huge_budget_stays_within_what_librdkafka_accepts() {
        let b = ReaderBudget::new(64 << 30, 1, 1);
        assert_eq!(b.fetch_bytes, MAX_FETCH);
        assert_eq!(b.prefetch_bytes, MAX_PREFETCH);
    }

    #[test]
    fn a_tiny_budget_still_fits_one_fetch() {
        let b = ReaderBudget::new(MIB, 8, 1);
        assert_eq!(b.batch_bytes, MIN_FETCH);
        assert_eq!(b.fetch_bytes, MIN_FETCH);
    }
}
