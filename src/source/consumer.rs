//! The micro-batching consumer. It runs on its own OS thread with librdkafka's
//! `BaseConsumer`: polling is a tight loop, and rebalance callbacks may block on the
//! table lookup without stalling the async runtime.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::batch::{OffsetRange, RawBatch};
use super::context::{lock, AssignState, SourceContext};
use super::SourceError;
use crate::config::StartingOffsets;

/// Looks up the last offset the output table holds for each partition (`None`: never
/// seen). Called from the rebalance callback, on the consumer thread.
pub type StartOffsets =
    Box<dyn Fn(&[i32]) -> Result<HashMap<i32, Option<i64>>, String> + Send + Sync>;

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub group_id: String,
    pub topic: String,
    pub options: BTreeMap<String, String>,
    pub starting: StartingOffsets,
    /// See `kafka.seek_rewind`.
    pub seek_rewind: u32,
    pub max_records: usize,
    pub trigger_interval: Duration,
    /// Stop once every assigned partition is read up to its high watermark at assignment.
    pub until_caught_up: bool,
}

/// The consumer thread's side.
pub struct KafkaSource {
    settings: ConsumerSettings,
    consumer: Arc<BaseConsumer<SourceContext>>,
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

    /// Partition ids of the topic, from the cluster's metadata.
    pub fn partitions(&self) -> Vec<i32> {
        match self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
        {
            Ok(m) => m
                .topics()
                .iter()
                .filter(|t| t.name() == self.topic)
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect(),
            Err(e) => {
                warn!(topic = %self.topic, error = %e, "cannot read the topic's partitions");
                Vec::new()
            }
        }
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

    /// Mirror committed table offsets into the consumer group, for standard lag tools.
    pub fn commit_offsets(&self, ranges: &BTreeMap<i32, OffsetRange>) {
        let mut tpl = TopicPartitionList::new();
        for (&p, r) in ranges {
            if let Err(e) = tpl.add_partition_offset(&self.topic, p, Offset::Offset(r.last + 1)) {
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
        start_offsets: StartOffsets,
    ) -> Result<(Self, SourceHandle), SourceError> {
        let state = Arc::new(Mutex::new(AssignState::default()));
        let context = SourceContext {
            topic: settings.topic.clone(),
            starting: settings.starting,
            seek_rewind: settings.seek_rewind,
            start_offsets,
            state: state.clone(),
        };
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            // High watermarks for the lag in progress records and /metrics.
            .set("statistics.interval.ms", "1000");
        for (k, v) in &settings.options {
            config.set(k, v);
        }
        let consumer: BaseConsumer<SourceContext> = config
            .create_with_context(context)
            .map_err(SourceError::kafka(&settings.topic))?;
        let partitions =
            super::check_broker(consumer.client(), &settings.brokers, &settings.topic)?;
        if partitions == 0 {
            warn!(topic = %settings.topic, "topic does not exist yet; waiting for it to be created");
        }
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
                state,
            },
            handle,
        ))
    }

    /// Poll until shutdown (or caught up), sending closed micro-batches to `tx`. A
    /// batch in progress when shutdown comes is still sent: it is complete as far as it
    /// goes, and the commit makes it exactly once either way.
    pub fn run(
        self,
        tx: mpsc::Sender<RawBatch>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let topic: Arc<str> = self.settings.topic.as_str().into();
        let mut batch = RawBatch::new(topic.clone());
        let mut generation = 0;
        // Next offset to read per assigned partition, for the caught-up check.
        let mut next: HashMap<i32, i64> = HashMap::new();
        let mut last_poll_error: Option<Instant> = None;
        let mut drain = Drain::default();
        let mut empty_since = None;
        let mut polls: u64 = 0;
        // First offset to keep per partition: records before it were rewound over.
        let mut starts: HashMap<i32, i64> = HashMap::new();
        loop {
            if shutdown.is_cancelled() {
                info!(topic = %topic, "consumer stopping on shutdown");
                break;
            }
            let polled = self.consumer.poll(Duration::from_millis(50));
            polls += 1;
            // The caught-up check takes the assignment lock: on a busy topic, look now and
            // then; at the end, when polls come back empty, look every time.
            let check_caught_up = self.settings.until_caught_up
                && (polled.is_none() || polls.is_multiple_of(4096) || drain.draining());
            {
                let mut state = lock(&self.state);
                if let Some(message) = state.error.take() {
                    return Err(SourceError::Assignment {
                        topic: topic.to_string(),
                        message,
                    });
                }
                if state.generation != generation {
                    generation = state.generation;
                    batch.retain_partitions(|p| state.assigned.contains(&p));
                    next = state.starts.clone();
                    starts = state.starts.clone();
                }
            }
            match polled {
                Some(Ok(m)) if starts.get(&m.partition()).is_some_and(|&s| m.offset() < s) => {}
                Some(Ok(m)) => {
                    batch.push(
                        m.partition(),
                        m.offset(),
                        m.timestamp().to_millis(),
                        m.key(),
                        m.payload(),
                    );
                    next.insert(m.partition(), m.offset() + 1);
                    drain.last_message = Instant::now();
                }
                Some(Err(e))
                    if last_poll_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) =>
                {
                    warn!(topic = %topic, error = %e, "consumer error (librdkafka retries by itself)");
                    last_poll_error = Some(Instant::now());
                }
                Some(Err(_)) => {}
                None => {}
            }
            let full = batch.len() >= self.settings.max_records;
            let due = batch
                .opened_at
                .is_some_and(|t| t.elapsed() >= self.settings.trigger_interval);
            // A backfill commits what it holds the moment it reaches its targets, without
            // waiting for the trigger; records of the tail drain, once they stop coming.
            let reached =
                check_caught_up && generation > 0 && self.caught_up(&next, &mut empty_since);
            let just_reached = reached && !drain.draining();
            let tail_idle = reached && drain.idle_for(Duration::from_millis(100));
            if !batch.is_empty() && (full || due || just_reached || tail_idle) {
                let closed = std::mem::replace(&mut batch, RawBatch::new(topic.clone()));
                if tx.blocking_send(closed).is_err() {
                    return Ok(()); // the pipeline is gone; it reports why
                }
            }
            if self.settings.until_caught_up && generation > 0 && drain.done(reached) {
                info!(topic = %topic, "caught up with the high watermarks seen at assignment");
                break;
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        Ok(())
    }

    /// Every assigned partition is read up to its target. An empty assignment counts
    /// only once it has lasted a whole session timeout: right after a crash the group
    /// still holds the dead member's partitions until its session expires, and a
    /// rebalance then hands them over.
    fn caught_up(&self, next: &HashMap<i32, i64>, empty_since: &mut Option<Instant>) -> bool {
        let state = lock(&self.state);
        if state.assigned.is_empty() {
            let since = *empty_since.get_or_insert_with(Instant::now);
            return since.elapsed() > self.empty_assignment_grace();
        }
        *empty_since = None;
        state.assigned.iter().all(|p| {
            let target = state.targets.get(p).copied().unwrap_or(0);
            next.get(p).copied().unwrap_or(0) >= target
        })
    }

    fn empty_assignment_grace(&self) -> Duration {
        let session_ms = self
            .settings
            .options
            .get("session.timeout.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(45_000); // librdkafka's default
        Duration::from_millis(session_ms) + Duration::from_secs(3)
    }
}

/// Once the targets are reached, keep reading while records still arrive (up to a cap).
///
/// tansu 0.6 answers ListOffsets(latest) with the base offset of the last record batch,
/// not the log end, so its "high watermark" can be a few records short. Kafka and
/// Redpanda report it exactly; for them this only adds one idle second at the end.
struct Drain {
    reached: Option<Instant>,
    last_message: Instant,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            reached: None,
            last_message: Instant::now(),
        }
    }
}

impl Drain {
    const IDLE: Duration = Duration::from_secs(1);
    const CAP: Duration = Duration::from_secs(10);

    fn draining(&self) -> bool {
        self.reached.is_some()
    }

    fn idle_for(&self, quiet: Duration) -> bool {
        self.reached
            .is_some_and(|r| r.elapsed().min(self.last_message.elapsed()) >= quiet)
    }

    fn done(&mut self, targets_reached: bool) -> bool {
        if !targets_reached {
            self.reached = None;
            return false;
        }
        let reached = *self.reached.get_or_insert_with(Instant::now);
        // Quiet since the later of reaching the targets and the last record: a partition
        // that was already at its target when assigned still gets its full idle second.
        let quiet = self.last_message.elapsed().min(reached.elapsed());
        quiet >= Self::IDLE || reached.elapsed() >= Self::CAP
    }
}
