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
use super::context::{lock, AssignState, SourceContext};
use super::loss::DataLossPolicy;
use super::offsets::OffsetStore;
use super::position::Positions;
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

/// How often an idle consumer reads the topic's id (a recreated topic is noticed though
/// nothing is delivered) and its positions.
const IDLE_CHECK: Duration = Duration::from_secs(2);
/// How often at most a position moved past markers alone is sent to be recorded.
const ADVANCE_EVERY: Duration = Duration::from_secs(5);

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
        let topic: Arc<str> = self.settings.topic.as_str().into();
        let mut batch = RawBatch::new(topic.clone());
        let mut generation = 0;
        let mut last_poll_error: Option<Instant> = None;
        let mut polls: u64 = 0;
        let mut offsets = Positions::default();
        // Positions last sent in a batch, so a move past markers is sent once.
        let mut reported: HashMap<i32, i64> = HashMap::new();
        // When the topic's id and the positions were last looked at while idle.
        let mut idle_check = Instant::now();
        let mut advance_sent = Instant::now();
        // A record suggested the topic was recreated: read its id now.
        let mut suspect = false;
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
                    offsets.sync(&state);
                    reported.retain(|p, _| state.assigned.contains(p));
                }
            }
            match polled {
                Some(Ok(m)) => {
                    let (p, o) = (m.partition(), m.offset());
                    if self.keep(&mut offsets, (p, o), &mut suspect)? {
                        batch.push(p, o, m.timestamp().to_millis(), m.key(), m.payload());
                    }
                }
                // librdkafka would hand the same batch back forever: stop and say where.
                Some(Err(e)) if is_undecodable(&e) => return Err(self.undecodable(&e, &offsets)),
                // ACLs changed under the member: retrying never heals it.
                Some(Err(e)) if is_denied(&e) => {
                    return Err(SourceError::Access {
                        topic: topic.to_string(),
                        what: format!("{} was refused: {e}", self.settings.connection.user()),
                        hint: format!(
                            "grant it READ on topic '{topic}' and on group '{}'",
                            self.settings.group_id
                        ),
                    })
                }
                Some(Err(e))
                    if last_poll_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) =>
                {
                    warn!(topic = %topic, error = %crate::report::Report(&e), "consumer error (librdkafka retries by itself)");
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
            if look {
                self.advance(&mut offsets);
            }
            let at_end = match &self.settings.targets {
                Some(targets) if look && generation > 0 => {
                    self.ends_reached(targets, &reported, &offsets)
                }
                _ => Vec::new(),
            };
            // Idle: a recreated topic is noticed even when nothing is delivered, and a
            // position moved past markers is recorded (throttled), so the tables never
            // resume before offsets that are no records.
            let mut moved = false;
            if suspect || quiet && batch.is_empty() && idle_check.elapsed() >= IDLE_CHECK {
                (idle_check, suspect) = (Instant::now(), false);
                if self.recreated(&mut offsets, &stop)? {
                    batch = RawBatch::new(topic.clone());
                    reported.clear();
                    continue;
                }
                moved = advance_sent.elapsed() >= ADVANCE_EVERY.max(self.settings.trigger_interval)
                    && offsets
                        .current()
                        .iter()
                        .any(|(p, pos)| reported.get(p) != Some(pos));
            }
            if full || due || moved || !at_end.is_empty() && (!batch.is_empty() || quiet) {
                let next = RawBatch::sized_like(&batch);
                let closed = std::mem::replace(&mut batch, next);
                if closed.is_empty() && at_end.is_empty() && !moved {
                    continue;
                }
                if closed.is_empty() {
                    advance_sent = Instant::now();
                }
                match self.close(closed, &mut offsets, &stop)? {
                    Some(closed) => {
                        for (&p, &pos) in &closed.positions {
                            reported.insert(p, pos);
                        }
                        // Wait until decode has taken the batch before filling the next:
                        // one batch waits and one is decoded, never two waiting (~50 MB
                        // each), and librdkafka's own prefetch keeps the next batch quick
                        // to fill.
                        let taken = tx
                            .blocking_send(closed)
                            .ok()
                            .and_then(|()| futures::executor::block_on(tx.reserve()).ok());
                        if taken.is_none() {
                            return Ok(()); // the pipeline is gone; it reports why
                        }
                    }
                    None => reported.clear(),
                }
            }
        }
        if !batch.is_empty() {
            if let Some(batch) = self.close(batch, &mut offsets, &stop)? {
                let _ = tx.blocking_send(batch);
            }
        }
        Ok(())
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
        if self.recreated(offsets, stop)? || !self.check_gaps(offsets, stop)? {
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

    /// The error for a record batch librdkafka cannot decode. The client's error carries
    /// no partition, so it names the assigned partitions that stopped short of their end:
    /// the batch at such a partition's position is the one that failed.
    fn undecodable(&self, error: &KafkaError, offsets: &Positions) -> SourceError {
        let topic = &self.settings.topic;
        let mut stuck = Vec::new();
        for (p, position) in offsets.current() {
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

/// A consume error that says this client may not read.
fn is_denied(error: &KafkaError) -> bool {
    let code = match error {
        KafkaError::MessageConsumption(code) | KafkaError::MessageConsumptionFatal(code) => code,
        _ => return false,
    };
    matches!(
        code,
        RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
    )
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
