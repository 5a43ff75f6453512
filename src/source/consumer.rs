//! The micro-batching consumer. It runs on its own OS thread with librdkafka's
//! `BaseConsumer`: polling is a tight loop, and rebalance callbacks may block on the
//! table lookup without stalling the async runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::batch::RawBatch;
use super::checks;
use super::context::{lock, AssignState, SourceContext};
use super::faults::{is_denied, is_undecodable, undecodable};
use super::loss::DataLossPolicy;
use super::offsets::OffsetStore;
use super::position::Positions;
use super::{Connection, SourceError, TopicId};
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

/// How often an idle consumer reads the topic's id (a recreated topic is noticed though
/// nothing is delivered) and its positions.
const IDLE_CHECK: Duration = Duration::from_secs(2);
/// How often at most a position moved past markers alone is sent to be recorded.
const ADVANCE_EVERY: Duration = Duration::from_secs(5);

/// What the poll loop carries from one poll to the next.
struct LoopState {
    topic: Arc<str>,
    batch: RawBatch,
    /// The assignment generation the batch and positions follow.
    generation: u64,
    last_poll_error: Option<Instant>,
    polls: u64,
    offsets: Positions,
    /// Positions last sent in a batch, so a move past markers is sent once.
    reported: HashMap<i32, i64>,
    /// When the topic's id and the positions were last looked at while idle.
    idle_check: Instant,
    advance_sent: Instant,
    /// A record suggested the topic was recreated: read its id now.
    suspect: bool,
}

impl LoopState {
    fn new(topic: Arc<str>) -> Self {
        Self {
            batch: RawBatch::new(topic.clone()),
            topic,
            generation: 0,
            last_poll_error: None,
            polls: 0,
            offsets: Positions::default(),
            reported: HashMap::new(),
            idle_check: Instant::now(),
            advance_sent: Instant::now(),
            suspect: false,
        }
    }
}

/// Why a batch closes beyond its size and trigger: every partition reached its target,
/// or positions moved past markers alone.
#[derive(Clone, Copy)]
struct Closing {
    at_end: bool,
    moved: bool,
}

/// The consumer thread's side.
pub struct KafkaSource {
    pub(super) settings: ConsumerSettings,
    pub(super) consumer: Arc<BaseConsumer<SourceContext>>,
    /// Reads the topic's id after each batch on connections of its own: a broker answers
    /// a connection's requests in order, so on the consumer's connections the request
    /// waited behind a fetch the broker was holding (up to fetch.wait.max.ms, 500 ms),
    /// and the batch's commit with it (measured: 451 ms of a live batch).
    pub(super) ids: BaseConsumer<super::KafkaContext>,
    pub(super) state: Arc<Mutex<AssignState>>,
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
                warn!(topic = %self.topic, partition = p, error = %crate::report::Report(&e), "bad offset for group commit");
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            // After a rebalance the partition may belong to another member: harmless.
            debug!(topic = %self.topic, error = %crate::report::Report(&e), "group offset commit not sent");
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
        let consumer: BaseConsumer<SourceContext> = consumer_config(&settings)
            .create_with_context(context)
            .map_err(SourceError::kafka(&settings.topic))?;
        settings.connection.authenticate(&consumer);
        let partitions =
            super::check_broker(consumer.client(), &settings.connection, &settings.topic)?;
        if partitions == 0 {
            warn!(topic = %settings.topic, "topic does not exist yet; waiting for it to be created");
        }
        lock(&state).known_partitions = i32::try_from(partitions).unwrap_or(i32::MAX);
        let ids = settings.connection.consumer(&settings.group_id, &[])?;
        // Before any rebalance: finding a time's offset may read records, which inside
        // the rebalance callback could outlast max.poll.interval.ms.
        super::times::record_time_starts(
            &settings.connection,
            &settings.topic,
            (&settings.starting, settings.seek_rewind),
            consumer.context().store.as_ref(),
            ids.client(),
        )?;
        consumer
            .subscribe(&[&settings.topic])
            .map_err(SourceError::kafka(&settings.topic))?;
        let consumer = Arc::new(consumer);
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
        let mut s = LoopState::new(self.settings.topic.as_str().into());
        while !stop.is_cancelled() {
            let polled = self.consumer.poll(Duration::from_millis(50));
            let quiet = polled.is_none();
            s.polls += 1;
            self.follow_assignment(&mut s)?;
            if let Some(polled) = polled {
                self.take(polled, &mut s)?;
            }
            let Some(closing) = self.closing(&mut s, quiet, &stop)? else {
                continue;
            };
            if !self.close_batch(&mut s, closing, &tx, &stop)? {
                return Ok(()); // the pipeline is gone; it reports why
            }
        }
        info!(topic = %s.topic, "consumer stopping");
        if !s.batch.is_empty() {
            if let Some(batch) = self.close(s.batch, &mut s.offsets, &stop)? {
                let _ = tx.blocking_send(batch);
            }
        }
        Ok(())
    }

    /// After a rebalance: keep what the batch holds of partitions still assigned.
    fn follow_assignment(&self, s: &mut LoopState) -> Result<(), SourceError> {
        let mut state = lock(&self.state);
        if let Some(cause) = state.error.take() {
            return Err(SourceError::read(&s.topic)(cause));
        }
        if state.generation != s.generation {
            s.generation = state.generation;
            s.batch.retain_partitions(|p| state.assigned.contains(&p));
            s.offsets.sync(&state);
            s.reported.retain(|p, _| state.assigned.contains(p));
        }
        Ok(())
    }

    /// A polled record goes into the batch (unless it is a replay); an error stops the
    /// loop when retrying cannot heal it.
    fn take(
        &self,
        polled: KafkaResult<BorrowedMessage<'_>>,
        s: &mut LoopState,
    ) -> Result<(), SourceError> {
        match polled {
            Ok(m) => {
                let (p, o) = (m.partition(), m.offset());
                if checks::keep(self, &mut s.offsets, (p, o), &mut s.suspect)? {
                    s.batch
                        .push(p, o, m.timestamp().to_millis(), m.key(), m.payload());
                }
            }
            // librdkafka would hand the same batch back forever: stop and say where.
            Err(e) if is_undecodable(&e) => {
                return Err(undecodable(&self.consumer, &s.topic, &e, &s.offsets))
            }
            // ACLs changed under the member: retrying never heals it.
            Err(e) if is_denied(&e) => {
                let topic = &s.topic;
                return Err(SourceError::Access {
                    topic: topic.to_string(),
                    what: format!("{} was refused: {e}", self.settings.connection.user()),
                    hint: format!(
                        "grant it READ on topic '{topic}' and on group '{}'",
                        self.settings.group_id
                    ),
                });
            }
            Err(e)
                if s.last_poll_error
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10)) =>
            {
                warn!(topic = %s.topic, error = %crate::report::Report(&e), "consumer error (librdkafka retries by itself)");
                s.last_poll_error = Some(Instant::now());
            }
            Err(_) => {}
        }
        Ok(())
    }

    /// Whether the batch closes now, and why.
    fn closing(
        &self,
        s: &mut LoopState,
        quiet: bool,
        stop: &CancellationToken,
    ) -> Result<Option<Closing>, SourceError> {
        let full = s.batch.len() >= self.settings.max_records
            || s.batch.byte_len() >= self.settings.max_bytes;
        let due = s
            .batch
            .opened_at
            .is_some_and(|t| t.elapsed() >= self.settings.trigger_interval);
        // A backfill commits what it holds the moment it reaches its targets; the
        // assignment lock is taken only now and then on a busy topic.
        let look = quiet || s.polls.is_multiple_of(4096);
        if look {
            self.advance(&mut s.offsets);
        }
        let at_end = match &self.settings.targets {
            Some(targets) if look && s.generation > 0 => !self
                .ends_reached(targets, &s.reported, &s.offsets)
                .is_empty(),
            _ => false,
        };
        // Idle: a recreated topic is noticed even when nothing is delivered, and a
        // position moved past markers is recorded (throttled), so the tables never
        // resume before offsets that are no records.
        let mut moved = false;
        if s.suspect || quiet && s.batch.is_empty() && s.idle_check.elapsed() >= IDLE_CHECK {
            (s.idle_check, s.suspect) = (Instant::now(), false);
            if checks::recreated(self, &mut s.offsets, stop)? {
                s.batch = RawBatch::new(s.topic.clone());
                s.reported.clear();
                return Ok(None);
            }
            moved = s.advance_sent.elapsed() >= ADVANCE_EVERY.max(self.settings.trigger_interval)
                && s.offsets
                    .current()
                    .iter()
                    .any(|(p, pos)| s.reported.get(p) != Some(pos));
        }
        let close = full || due || moved || at_end && (!s.batch.is_empty() || quiet);
        Ok(close.then_some(Closing { at_end, moved }))
    }

    /// Close the batch and hand it to decode; false when nobody takes it any more.
    fn close_batch(
        &self,
        s: &mut LoopState,
        closing: Closing,
        tx: &mpsc::Sender<RawBatch>,
        stop: &CancellationToken,
    ) -> Result<bool, SourceError> {
        let next = RawBatch::sized_like(&s.batch);
        let closed = std::mem::replace(&mut s.batch, next);
        if closed.is_empty() && !closing.at_end && !closing.moved {
            return Ok(true);
        }
        if closed.is_empty() {
            s.advance_sent = Instant::now();
        }
        let Some(closed) = self.close(closed, &mut s.offsets, stop)? else {
            s.reported.clear();
            return Ok(true);
        };
        for (&p, &pos) in &closed.positions {
            s.reported.insert(p, pos);
        }
        // Wait until decode has taken the batch before filling the next: one batch
        // waits and one is decoded, never two waiting (~50 MB each), and librdkafka's
        // own prefetch keeps the next batch quick to fill.
        let taken = tx
            .blocking_send(closed)
            .ok()
            .and_then(|()| futures::executor::block_on(tx.reserve()).ok());
        Ok(taken.is_some())
    }

    /// Stamp a closed batch with the topic's id and the positions, once its gaps are
    /// checked; None when it must not be committed (the topic was recreated, or the
    /// checks could not run before shutdown: it is read again).
    fn close(
        &self,
        mut closed: RawBatch,
        offsets: &mut Positions,
        stop: &CancellationToken,
    ) -> Result<Option<RawBatch>, SourceError> {
        // Read after the batch's records were fetched: if the id is still the one they
        // were read under, they come from that incarnation of the topic.
        if checks::recreated(self, offsets, stop)? || !checks::check_gaps(self, offsets, stop)? {
            return Ok(None); // what the batch held came (partly) from the deleted topic
        }
        self.advance(offsets);
        closed.topic_id = lock(&self.state).topic_id.map(TopicId::fingerprint);
        closed.positions = offsets.current();
        Ok(Some(closed))
    }

    /// Move the positions past what the consumer passed without a record.
    fn advance(&self, offsets: &mut Positions) {
        if let Ok(tpl) = self.consumer.position() {
            offsets.advance(
                tpl.elements_for_topic(&self.settings.topic)
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    }),
            );
        }
    }

    /// Assigned partitions whose position reached its target and was not reported there.
    fn ends_reached(
        &self,
        targets: &BTreeMap<i32, i64>,
        reported: &HashMap<i32, i64>,
        offsets: &Positions,
    ) -> Vec<i32> {
        let assigned: Vec<i32> = lock(&self.state).assigned.iter().copied().collect();
        if assigned.is_empty() {
            return Vec::new();
        }
        let positions = offsets.current();
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
}

/// The consumer's librdkafka settings: ours, then those `kafka.options` overrides.
fn consumer_config(settings: &ConsumerSettings) -> rdkafka::ClientConfig {
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
    config
}
