//! The shared reader's stages: decode once, fan out to every pipeline of the source, and
//! the tables' offsets the consumer's rebalance callback reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::task::Prepared;
use crate::config::ReaderPlan;
use crate::decode::{Decoded, Decoder};
use crate::sink::SinkOptions;
use crate::source::{Committed, Record, StoreError};
use crate::source::{OffsetRange, OffsetStore, ProducedAt, RawBatch, SourceHandle};
use crate::{Error, Result};
use std::sync::atomic::AtomicU64;

/// How many decoded batches may wait for one pipeline while it commits the one before.
/// The reader blocks when any pipeline's queue is full: the slowest pipeline sets the
/// pace, and memory stays bounded by a few batches whatever the backlog. One is enough
/// to overlap decoding with committing; a second bought no speed and cost ~50 MB.
pub(super) const QUEUE: usize = 1;

/// A decoded batch on its way to the commit stage (one copy per pipeline; the Arrow
/// arrays are shared).
#[derive(Clone)]
pub(super) struct Ready {
    pub(super) opened_at: Option<Instant>,
    /// First record to the batch closing, and time spent decoding.
    pub(super) fetch_ms: u64,
    pub(super) decode_ms: u64,
    pub(super) ranges: BTreeMap<i32, OffsetRange>,
    /// The consumer's positions when the batch closed.
    pub(super) positions: HashMap<i32, i64>,
    pub(super) records: usize,
    pub(super) bytes: usize,
    /// When the records were produced, for the latency in the progress record.
    pub(super) produced: Option<ProducedAt>,
    /// The id of the topic they were read from (see `RawBatch::topic_id`).
    pub(super) topic_id: Option<i64>,
    pub(super) decoded: Decoded,
}

/// What one pipeline takes from its source's reader.
pub(super) struct Feed {
    pub(super) rx: mpsc::Receiver<Ready>,
    pub(super) source: SourceHandle,
    pub(super) group: Arc<GroupCommits>,
    /// This pipeline's place in `group`.
    pub(super) slot: usize,
    /// Resets of the tables' offsets so far (see `TablesOffsets::resets`).
    pub(super) resets: Arc<AtomicU64>,
    /// The reader stops once every pipeline it feeds has dropped this.
    pub(super) _reading: Arc<tokio_util::sync::DropGuard>,
}

/// Decode each raw batch once and hand every pipeline its copy (Arrow arrays are shared,
/// not copied). A pipeline that stopped listening (caught up, or failed) is dropped;
/// when none is left the stage ends, and with it the consumer.
pub(super) async fn decode_stage(
    decoder: Decoder,
    mut raw_rx: mpsc::Receiver<RawBatch>,
    mut outputs: Vec<mpsc::Sender<Ready>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<()> {
    // Lent to one blocking task per batch and handed back: with schema evolution a
    // batch may add columns that every later batch decodes.
    let mut decoder = decoder;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    while let Some(raw) = raw_rx.recv().await {
        let fetch_ms = raw.opened_at.map_or(0, |t| t.elapsed().as_millis() as u64);
        // A registry's new schema ids are looked up first; during an outage this waits,
        // and a shutdown meanwhile leaves the batch uncommitted (read again next run).
        if let Err(e) = decoder.prepare(&raw, &shutdown).await {
            return match shutdown.is_cancelled() && e.is_transient() {
                true => Ok(()),
                false => Err(e.into()),
            };
        }
        let (back, ready) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let ready = decoder.decode_evolving(&raw, threads).map(|decoded| Ready {
                opened_at: raw.opened_at,
                fetch_ms,
                decode_ms: started.elapsed().as_millis() as u64,
                ranges: raw.offset_ranges(),
                positions: raw.positions.clone(),
                records: raw.len(),
                bytes: raw.byte_len(),
                produced: raw.timestamp_quantiles(),
                topic_id: raw.topic_id,
                decoded,
            });
            (decoder, ready)
        })
        .await
        .map_err(|cause| Error::Task {
            task: "decode".into(),
            cause,
        })?;
        decoder = back;
        let ready = ready?;
        let mut open = Vec::with_capacity(outputs.len());
        for tx in outputs {
            if tx.send(ready.clone()).await.is_ok() {
                open.push(tx);
            }
        }
        outputs = open;
        if outputs.is_empty() {
            break; // every pipeline stopped; each reports why
        }
    }
    Ok(())
}

/// The offsets of every table one reader feeds, for the consumer's rebalance callback
/// (on its own thread): reading resumes after the lowest, and each pipeline's commit
/// drops what its own table already holds.
pub(super) struct TablesOffsets {
    tables: Vec<(SinkOptions, String)>,
    /// The dead-letter tables beside them: lowered with them on a reset (a recreated
    /// topic), or the new topic's bad records would be dropped as replays.
    dead_letters: Vec<(SinkOptions, String)>,
    /// Bumped after every reset, so each pipeline re-reads its tables' offsets before
    /// its next commit instead of trusting the ones it cached.
    resets: Arc<AtomicU64>,
    runtime: tokio::runtime::Handle,
}

impl TablesOffsets {
    /// The tables of `reader`'s pipelines, opened as `prepared`.
    pub(super) fn new(prepared: &[Prepared], reader: &ReaderPlan, resets: Arc<AtomicU64>) -> Self {
        let each = || prepared.iter().zip(&reader.pipelines);
        Self {
            tables: each()
                .map(|(p, spec)| (p.sink_opts.clone(), spec.table.clone()))
                .collect(),
            dead_letters: each()
                .map(|(p, spec)| (p.sink_opts.clone(), spec.dead_letter_table.clone()))
                .collect(),
            resets,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Run `work` to completion from the consumer thread. librdkafka may also call the
    /// rebalance callback from a runtime worker (closing a consumer serves its pending
    /// callbacks): there the worker is handed over for the wait instead of blocking it.
    fn block<F: std::future::Future>(&self, work: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.runtime.block_on(work)),
            Err(_) => self.runtime.block_on(work),
        }
    }
}

impl OffsetStore for TablesOffsets {
    fn committed(
        &self,
        partitions: &[i32],
        topic_id: Option<i64>,
    ) -> std::result::Result<HashMap<i32, Committed>, StoreError> {
        let mut out: HashMap<i32, Committed> = HashMap::new();
        for (i, (opts, table)) in self.tables.iter().enumerate() {
            let held = self.block(crate::sink::read_committed(opts, table, partitions))?;
            for &p in partitions {
                let h = held.get(&p).copied().unwrap_or_default();
                let c = out.entry(p).or_insert(Committed::single(h.last));
                if i > 0 {
                    c.lowest = c.lowest.zip(h.last).map(|(a, b)| a.min(b));
                    c.highest = c.highest.max(h.last);
                }
                c.recreated |= h
                    .topic_id
                    .zip(topic_id)
                    .is_some_and(|(was, now)| was != now);
            }
        }
        Ok(out)
    }

    fn record(
        &self,
        last: &BTreeMap<i32, i64>,
        mode: Record,
        topic_id: Option<i64>,
    ) -> std::result::Result<BTreeMap<i32, i64>, StoreError> {
        let mut lowest: BTreeMap<i32, i64> = BTreeMap::new();
        // A reset lowers the dead letters' offsets too, or the new topic's bad records
        // would be dropped as replays.
        let dead_letters = self.dead_letters.iter().filter(|_| mode != Record::Start);
        for (opts, table) in dead_letters {
            self.block(crate::sink::record_offsets(
                opts, table, last, mode, topic_id,
            ))?;
        }
        for (opts, table) in &self.tables {
            if mode != Record::Start {
                crate::failpoint::hit("during_reset", &opts.pipeline);
            }
            let recorded = self.block(crate::sink::record_offsets(
                opts, table, last, mode, topic_id,
            ))?;
            for (p, o) in recorded {
                lowest
                    .entry(p)
                    .and_modify(|l| *l = (*l).min(o))
                    .or_insert(o);
            }
        }
        if mode != Record::Start {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
        Ok(lowest)
    }
}

/// Mirrors into the consumer group what every pipeline of the reader has committed (the
/// lowest offset per partition), so standard lag tools see the slowest table's lag.
pub(super) struct GroupCommits {
    handle: SourceHandle,
    committed: std::sync::Mutex<Vec<BTreeMap<i32, i64>>>,
}

impl GroupCommits {
    pub(super) fn new(handle: SourceHandle, pipelines: usize) -> Self {
        Self {
            handle,
            committed: std::sync::Mutex::new(vec![BTreeMap::new(); pipelines]),
        }
    }

    /// Pipeline `slot`'s table holds every offset up to `held`.
    pub(super) fn committed(&self, slot: usize, held: &BTreeMap<i32, i64>) {
        let lowest = {
            let mut all = self.committed.lock().unwrap_or_else(|e| e.into_inner());
            for (&p, &last) in held {
                all[slot].insert(p, last);
            }
            lowest_common(&all)
        };
        self.handle.commit_offsets(&lowest);
    }
}

/// Per partition every pipeline has committed, the lowest offset among them.
fn lowest_common(all: &[BTreeMap<i32, i64>]) -> BTreeMap<i32, i64> {
    let Some((first, rest)) = all.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter_map(|(p, &o)| {
            let low = rest
                .iter()
                .try_fold(o, |low, m| m.get(p).map(|&x| low.min(x)))?;
            Some((*p, low))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_sees_the_slowest_pipeline() {
        let a = BTreeMap::from([(0, 10), (1, 7)]);
        let b = BTreeMap::from([(0, 4), (1, 9), (2, 3)]);
        let low = lowest_common(&[a, b]);
        assert_eq!(low.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(low[&0], 4);
        assert_eq!(low[&1], 7);
        assert!(lowest_common(&[BTreeMap::from([(0, 1)]), BTreeMap::new()]).is_empty());
    }
}
