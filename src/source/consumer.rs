//! The micro-batching consumer. It runs on its own OS thread with librdkafka's
//! `BaseConsumer`: polling is a tight loop, and rebalance callbacks may block on the
//! table lookup without stalling the async runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::batch::RawBatch;
use super::context::{lock, AssignState, DataLossPolicy, SourceContext};
use super::offsets::{OffsetStore, Record};
use super::{Connection, ReadError, SourceError, TopicId};
use crate::config::StartingOffsets;

#[derive(Clone)]
pub struct ConsumerSettings {
    /// Brokers, security and `kafka.options` (with the isolation level).
    pub connection: Connection,
    pub group_id: String,
    pub topic: String,
    pub starting: StartingOffsets,
    /// See `kafka.seek_rewind`.
    pub seek_rewind: u32,
    pub max_records: usize,
    pub max_bytes: usize,
    /// librdkafka's prefetch queue and one fetch response, in bytes (the reader's share
    /// of `memory_limit`; `kafka.options` may set either).
    pub prefetch_bytes: usize,
    pub fetch_bytes: usize,
    pub trigger_interval: Duration,
    /// `--until-caught-up`: the end of each partition when the run started. A batch
    /// closes at once when every assigned partition has reached it, and the consumer
    /// reports its positions there even when only markers were left to read.
    pub targets: Option<Arc<BTreeMap<i32, i64>>>,
    pub data_loss: DataLossPolicy,
}

/// The consumer thread's side.
pub struct KafkaSource {
    settings: ConsumerSettings,
    consumer: Arc<BaseConsumer<SourceContext>>,
    /// Reads the topic's id after each batch on connections of its own: a broker answers
    /// a connection's requests in order, so on the consumer's connections the request
    /// waited behind a fetch the broker was holding (up to fetch.wait.max.ms, 500 ms),
    /// and the batch's commit with it (measured: 451 ms of a live batch).
    ids: BaseConsumer<super::KafkaContext>,
    state: Arc<Mutex<AssignState>>,
}

/// The pipeline's side: commits offsets to the group after a table commit.
#[derive(Clone)]
pub struct SourceHandle {
    consumer: Arc<BaseConsumer<SourceContext>>,
    topic: String,
}

impl SourceHandle {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Partitions assigned to this member now.
    pub fn assigned(&self) -> Vec<i32> {
        self.consumer
            .context()
            .lock()
            .assigned
            .iter()
            .copied()
            .collect()
    }

    /// Partitions positioned by this member so far (their data-loss checks ran), and
    /// the topic's id as last read (`TopicId::fingerprint`).
    pub fn checked(&self) -> (BTreeSet<i32>, Option<i64>) {
        let state = self.consumer.context().lock();
        (
            state.positioned.clone(),
            state.topic_id.map(TopicId::fingerprint),
        )
    }

    /// Latest known high watermark of each partition this member reads.
    pub fn high_watermarks(&self) -> HashMap<i32, i64> {
        let state = self.consumer.context().lock();
        state
            .high
            .iter()
            .filter(|(p, _)| state.assigned.contains(p))
            .map(|(&p, &h)| (p, h))
            .collect()
    }

    /// Mirror committed table offsets (the last offset held per partition) into the
    /// consumer group, for standard lag tools.
    pub fn commit_offsets(&self, last: &BTreeMap<i32, i64>) {
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in last {
            if let Err(e) = tpl.add_partition_offset(&self.topic, p, Offset::Offset(o + 1)) {
                warn!(topic = %self.topic, partition = p, error = %e, "bad offset for group commit");
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            // After a rebalance the partition may belong to another member: harmless.
            debug!(topic = %self.topic, error = %e, "group offset commit not sent");
        }
    }
}

impl KafkaSource {
    pub fn new(
        settings: ConsumerSettings,
        store: Box<dyn OffsetStore>,
    ) -> Result<(Self, SourceHandle), SourceError> {
        let state = Arc::new(Mutex::new(AssignState::default()));
        let context = SourceContext {
            topic: settings.topic.clone(),
            starting: settings.starting.clone(),
            seek_rewind: settings.seek_rewind,
            store,
            state: state.clone(),
            data_loss: settings.data_loss.clone(),
            probe: settings.connection.clone(),
        };
        let mut config = settings.connection.client_config();
        config
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            // High watermarks for the lag in progress records and /metrics.
            .set("statistics.interval.ms", "1000")
            // The loop stops polling while decode takes the last batch, so librdkafka's
            // prefetch queue fills past its thresholds; its default then holds every
            // partition's next fetch back for 1 s (librdkafka 2.4+), and the next batch
            // waited on it: 1.7-1.9x the rate with 10 ms (A/B, same binary and topic).
            .set("fetch.queue.backoff.ms", "10")
            // The memory budget: librdkafka's defaults (64 MiB queued, 50 MiB fetches)
            // would be most of it.
            .set(
                "queued.max.messages.kbytes",
                (settings.prefetch_bytes / 1024).to_string(),
            )
            .set("fetch.max.bytes", settings.fetch_bytes.to_string());
        // kafka.options may set these too (e.g. a longer statistics interval).
        for key in [
            "statistics.interval.ms",
            "auto.offset.reset",
            "fetch.queue.backoff.ms",
            "queued.max.messages.kbytes",
            "fetch.max.bytes",
        ] {
            if let Some(v) = settings.connection.property(key) {
                config.set(key, v);
            }
        }
        let consumer: BaseConsumer<SourceContext> = config
            .create_with_context(context)
            .map_err(SourceError::kafka(&settings.topic))?;
        settings.connection.authenticate(&consumer);
        let partitions =
            super::check_broker(consumer.client(), &settings.connection, &settings.topic)?;
        if partitions == 0 {
            warn!(topic = %settings.topic, "topic does not exist yet; waiting for it to be created");
        }
        consumer
            .subscribe(&[&settings.topic])
            .map_err(SourceError::kafka(&settings.topic))?;
        let consumer = Arc::new(consumer);
        let ids = settings.connection.consumer(&settings.group_id, &[])?;
        let handle = SourceHandle {
            consumer: consumer.clone(),
            topic: settings.topic.clone(),
        };
        Ok((
            Self {
                settings,
                consumer,
                ids,
                state,
            },
            handle,
        ))
    }

    /// Poll until `stop`, sending closed micro-batches to `tx`. A batch in progress when
    /// `stop` comes is still sent: it is complete as far as it goes, and the commit makes
    /// it exactly once either way.
    pub fn run(
        self,
        tx: mpsc::Sender<RawBatch>,
        stop: CancellationToken,
    ) -> Result<(), SourceError> {
        let topic: Arc<str> = self.settings.topic.as_str().into();
        let mut batch = RawBatch::new(topic.clone());
        let mut generation = 0;
        let mut last_poll_error: Option<Instant> = None;
        let mut polls: u64 = 0;
        let mut offsets = Offsets::default();
        // Positions last reported in a batch, so the end of a partition is reported once.
        let mut reported: HashMap<i32, i64> = HashMap::new();
        loop {
            if stop.is_cancelled() {
                info!(topic = %topic, "consumer stopping");
                break;
            }
            let polled = self.consumer.poll(Duration::from_millis(50));
            let quiet = polled.is_none();
            polls += 1;
            {
                let mut state = lock(&self.state);
                if let Some(cause) = state.error.take() {
                    return Err(SourceError::read(&topic)(cause));
                }
                if state.generation != generation {
                    generation = state.generation;
                    batch.retain_partitions(|p| state.assigned.contains(&p));
                    offsets = Offsets::new(&state);
                    reported.retain(|p, _| state.assigned.contains(p));
                }
            }
            match polled {
                Some(Ok(m)) => {
                    let (p, o) = (m.partition(), m.offset());
                    if self.keep(&mut offsets, p, o)? {
                        batch.push(p, o, m.timestamp().to_millis(), m.key(), m.payload());
                    }
                }
                // librdkafka would hand the same batch back forever: stop and say where.
                Some(Err(e)) if is_undecodable(&e) => return Err(self.undecodable(&e, &offsets)),
                Some(Err(e))
                    if last_poll_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) =>
                {
                    warn!(topic = %topic, error = %e, "consumer error (librdkafka retries by itself)");
                    last_poll_error = Some(Instant::now());
                }
                Some(Err(_)) | None => {}
            }
            let full = batch.len() >= self.settings.max_records
                || batch.byte_len() >= self.settings.max_bytes;
            let due = batch
                .opened_at
                .is_some_and(|t| t.elapsed() >= self.settings.trigger_interval);
            // A backfill commits what it holds the moment it reaches its targets; the
            // assignment lock is taken only now and then on a busy topic.
            let look = quiet || polls.is_multiple_of(4096);
            let at_end = match &self.settings.targets {
                Some(targets) if look && generation > 0 => {
                    self.ends_reached(targets, &reported, &offsets)
                }
                _ => Vec::new(),
            };
            if full || due || !at_end.is_empty() && (!batch.is_empty() || quiet) {
                let next = RawBatch::sized_like(&batch);
                let mut closed = std::mem::replace(&mut batch, next);
                if closed.is_empty() && at_end.is_empty() {
                    continue;
                }
                // Read after the batch's records were fetched: if the id is still the
                // one they were read under, they come from that incarnation of the topic.
                if self.recreated(&mut offsets, &stop)? {
                    reported.clear();
                    continue; // what the batch held came (partly) from the deleted topic
                }
                closed.topic_id = lock(&self.state).topic_id.map(TopicId::fingerprint);
                closed.positions = self.positions(&offsets);
                for (&p, &pos) in &closed.positions {
                    reported.insert(p, pos);
                }
                // Wait until decode has taken the batch before filling the next: one
                // batch waits and one is decoded, never two waiting (~50 MB each), and
                // librdkafka's own prefetch keeps the next batch quick to fill.
                let taken = tx
                    .blocking_send(closed)
                    .ok()
                    .and_then(|()| futures::executor::block_on(tx.reserve()).ok());
                if taken.is_none() {
                    return Ok(()); // the pipeline is gone; it reports why
                }
            }
        }
        if !batch.is_empty() && !self.recreated(&mut offsets, &stop)? {
            batch.topic_id = lock(&self.state).topic_id.map(TopicId::fingerprint);
            batch.positions = self.positions(&offsets);
            let _ = tx.blocking_send(batch);
        }
        Ok(())
    }

    /// Whether the topic was deleted and recreated since its id was last read. Then
    /// (unless the data-loss policy stops the reader) every table starts the assigned
    /// partitions over at the new topic's first record, recorded before it is read.
    fn recreated(
        &self,
        offsets: &mut Offsets,
        stop: &CancellationToken,
    ) -> Result<bool, SourceError> {
        let topic = &self.settings.topic;
        // Without the id the batch cannot be stamped: wait for the broker (as a fetch
        // would); on shutdown the batch is dropped and read again on restart.
        let now = loop {
            // Serves its events (a token refresh) between requests.
            let _ = self.ids.poll(Duration::ZERO);
            match super::topic_id(self.ids.client(), topic, Duration::from_secs(10)) {
                Ok(now) => break now,
                Err(e) if !stop.is_cancelled() => {
                    warn!(topic = %topic, error = %e, "cannot read the topic's id; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(_) => return Ok(true),
            }
        };
        let (was, assigned) = {
            let mut state = lock(&self.state);
            let was = state.topic_id;
            if now.is_some() {
                state.topic_id = now;
            }
            (was, state.assigned.clone())
        };
        let (Some(was), Some(now)) = (was, now) else {
            return Ok(false); // no ids, or the topic is gone for now (not recreated yet)
        };
        if was == now {
            return Ok(false);
        }
        self.lost(&format!(
            "the topic was deleted and recreated while it was read (its id went from {was} \
             to {now}); records of the old topic not yet committed are gone"
        ))?;
        let mut starts = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for &p in &assigned {
            // The new topic may have fewer partitions: those are revoked by the next
            // rebalance, nothing to reset.
            let low = match self
                .consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
            {
                Ok((low, _)) => low,
                Err(e) => {
                    warn!(topic = %topic, partition = p, error = %e, "partition not in the recreated topic");
                    continue;
                }
            };
            starts.insert(p, low);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(SourceError::kafka(topic))?;
        }
        let last = starts.iter().map(|(&p, &low)| (p, low - 1)).collect();
        self.consumer
            .context()
            .store
            .record(&last, Record::Exactly, Some(now.fingerprint()))
            .map_err(|e| SourceError::read(topic)(ReadError::Tables(e)))?;
        if !starts.is_empty() {
            self.consumer
                .seek_partitions(tpl, Duration::from_secs(10))
                .map_err(SourceError::kafka(topic))?;
        }
        info!(topic = %topic, starts = ?starts, "reading the recreated topic from its start");
        offsets.starts = starts.into_iter().collect();
        offsets.next.clear();
        Ok(true)
    }

    /// Whether to keep record `offset` of `partition`; an error when the partition skips
    /// records that retention deleted, or goes back (a recreated topic), and the policy
    /// says to stop.
    fn keep(
        &self,
        offsets: &mut Offsets,
        partition: i32,
        offset: i64,
    ) -> Result<bool, SourceError> {
        let start = offsets.starts.get(&partition).copied();
        let expected = match offsets.next.get(&partition) {
            Some(&next) => next,
            // Records before the start were read only because of `seek_rewind`.
            None if start.is_some_and(|s| offset < s) => return Ok(false),
            None => start.unwrap_or(offset),
        };
        if offset < expected && self.shrunk(partition, expected)? {
            self.lost(&format!(
                "partition {partition} went back from offset {} to {offset} and now ends \
                 before it; was the topic deleted and recreated?",
                expected - 1
            ))?;
            // Without a restart the table's offsets would drop the new records as
            // replays: make the table start over here, as an assignment would.
            let reset = BTreeMap::from([(partition, offset - 1)]);
            let id = lock(&self.state).topic_id.map(TopicId::fingerprint);
            self.consumer
                .context()
                .store
                .record(&reset, Record::Exactly, id)
                .map_err(|e| SourceError::read(&self.settings.topic)(ReadError::Tables(e)))?;
        } else if offset > expected {
            // Gaps are normal where records were compacted away or are transaction
            // markers; they are loss only where retention deleted what we had not read.
            let (low, _) = self
                .consumer
                .fetch_watermarks(&self.settings.topic, partition, Duration::from_secs(10))
                .map_err(SourceError::kafka(&self.settings.topic))?;
            if low > expected {
                self.lost(&format!(
                    "partition {partition} skipped offsets {expected}..{}: retention deleted \
                     them before they were read",
                    low.min(offset)
                ))?;
            } else {
                debug!(
                    partition,
                    expected, offset, "offsets skipped (compaction or transaction markers)"
                );
            }
        }
        offsets.next.insert(partition, offset + 1);
        Ok(true)
    }

    /// Whether `partition`, delivering an offset below `expected`, now ends before
    /// `expected`: a recreated topic. Otherwise it is a re-delivery (librdkafka does that
    /// around re-positioning), which the batch and the table's offsets absorb.
    fn shrunk(&self, partition: i32, expected: i64) -> Result<bool, SourceError> {
        let probe = &self.consumer.context().probe;
        let end = super::ends::partition_end(probe, &self.settings.topic, partition)?;
        Ok(end < expected)
    }

    /// The error for a record batch librdkafka cannot decode. The client's error carries
    /// no partition, so it names the assigned partitions that stopped short of their end:
    /// the batch at such a partition's position is the one that failed.
    fn undecodable(&self, error: &KafkaError, offsets: &Offsets) -> SourceError {
        let topic = &self.settings.topic;
        let mut stuck = Vec::new();
        for (p, position) in self.positions(offsets) {
            let high = self
                .consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map_or(i64::MAX, |(_, h)| h);
            if position < high {
                stuck.push(format!("partition {p} at offset {position}"));
            }
        }
        stuck.sort();
        let what = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::NotImplemented) => {
                "its compression codec is not built into this client (supported: none, gzip, \
                 snappy, lz4, zstd)"
            }
            _ => "it is corrupt or uses a format this client cannot read",
        };
        let at = match stuck.is_empty() {
            true => "an unknown position".to_string(),
            false => stuck.join(", "),
        };
        SourceError::read(topic)(ReadError::Undecodable {
            at,
            what,
            cause: error.clone(),
        })
    }

    fn lost(&self, what: &str) -> Result<(), SourceError> {
        self.settings
            .data_loss
            .report(&self.settings.topic, what)
            .map_err(SourceError::read(&self.settings.topic))
    }

    /// Assigned partitions whose position reached its target and was not reported there.
    fn ends_reached(
        &self,
        targets: &BTreeMap<i32, i64>,
        reported: &HashMap<i32, i64>,
        offsets: &Offsets,
    ) -> Vec<i32> {
        let assigned: Vec<i32> = lock(&self.state).assigned.iter().copied().collect();
        if assigned.is_empty() {
            return Vec::new();
        }
        let positions = self.positions(offsets);
        let all_there = assigned.iter().all(|p| {
            let target = targets.get(p).copied().unwrap_or(0);
            positions.get(p).is_some_and(|&pos| pos >= target)
        });
        if !all_there {
            return Vec::new();
        }
        assigned
            .into_iter()
            .filter(|p| reported.get(p) != positions.get(p))
            .collect()
    }

    /// The consumer's position (next offset to deliver) per assigned partition: on a
    /// transactional topic it moves past commit markers, which no record shows. Before
    /// the first delivery it is the start (everything before it is in the table).
    fn positions(&self, offsets: &Offsets) -> HashMap<i32, i64> {
        let mut out = offsets.starts.clone();
        for (p, next) in &offsets.next {
            out.insert(*p, *next);
        }
        if let Ok(tpl) = self.consumer.position() {
            for e in tpl.elements_for_topic(&self.settings.topic) {
                if let (Offset::Offset(o), Some(known)) = (e.offset(), out.get_mut(&e.partition()))
                {
                    *known = (*known).max(o);
                }
            }
        }
        out
    }
}

/// A consume error that repeats for the same batch however often it is fetched.
fn is_undecodable(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::NotImplemented
                | RDKafkaErrorCode::BadMessage
                | RDKafkaErrorCode::BadCompression
        ) | KafkaError::MessageConsumptionFatal(_)
    )
}

/// Per assigned partition: where reading starts and the next offset expected.
#[derive(Default)]
struct Offsets {
    starts: HashMap<i32, i64>,
    next: HashMap<i32, i64>,
}

impl Offsets {
    fn new(state: &AssignState) -> Self {
        Self {
            starts: state.starts.clone(),
            next: HashMap::new(),
        }
    }
}
