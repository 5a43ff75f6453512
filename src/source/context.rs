//! Rebalance handling: on every assignment, partitions start where the table says, and
//! a resume offset the partition can no longer serve is data loss, never a silent skip.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::client::OAuthToken;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{error, info, warn};

use super::loss::DataLossPolicy;
use super::offsets::{OffsetStore, Record};
use super::start::{needs_end, start_for, Facts};
use super::{Connection, KafkaContext, ReadError, TopicId};
use crate::config::{Start, StartingOffsets};

/// What the consumer loop learns from rebalances.
#[derive(Debug, Default)]
pub(super) struct AssignState {
    /// Bumped on every assign or revoke.
    pub generation: u64,
    pub assigned: BTreeSet<i32>,
    /// First offset to read per assigned partition.
    pub starts: HashMap<i32, i64>,
    /// A failure the consumer loop must stop on.
    pub error: Option<ReadError>,
    /// Latest high watermark per partition, from librdkafka's statistics (for lag).
    pub high: HashMap<i32, i64>,
    /// The topic's id as last read (see `topic_id`): batches are stamped with it.
    pub topic_id: Option<TopicId>,
    /// Partitions this member positioned (and so checked for data loss) in this run.
    pub positioned: BTreeSet<i32>,
    /// The generation each assigned partition was assigned in: a partition kept across
    /// an incremental rebalance keeps its position, one assigned again starts over.
    pub since: HashMap<i32, u64>,
    /// How many partitions the topic had when reading started (0: it did not exist
    /// yet). Partitions beyond them appeared while running: read from their start.
    pub known_partitions: i32,
}

pub(super) struct SourceContext {
    pub topic: String,
    pub starting: StartingOffsets,
    pub seek_rewind: u32,
    pub store: Box<dyn OffsetStore>,
    pub state: Arc<Mutex<AssignState>>,
    pub data_loss: DataLossPolicy,
    /// For short reads beside the consumer (ends, offsets by time); also the source of
    /// this consumer's OAUTHBEARER tokens.
    pub probe: Connection,
}

impl SourceContext {
    pub(super) fn lock(&self) -> MutexGuard<'_, AssignState> {
        lock(&self.state)
    }

    /// Set the start offset of every partition in `tpl` from the tables' `txn` records:
    /// after the lowest offset any table fed by this reader holds.
    fn position_partitions(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) -> Result<HashMap<i32, i64>, ReadError> {
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let id = super::topic_id(consumer.client(), &self.topic, Duration::from_secs(10))?;
        self.lock().topic_id = id;
        let fingerprint = id.map(TopicId::fingerprint);
        let committed = self
            .store
            .committed(&partitions, fingerprint)
            .map_err(ReadError::Tables)?;
        let mut starts = HashMap::new();
        let mut lows = HashMap::new();
        // Start positions that must be in the table before anything is read from them.
        let mut record = BTreeMap::new();
        let mut reset = BTreeMap::new();
        for &p in &partitions {
            let committed = committed
                .get(&p)
                .copied()
                .unwrap_or(super::Committed::single(None));
            let facts = self.facts(consumer, p, committed, id)?;
            let decision = start_for(&facts)?;
            for lost in decision.lost {
                self.data_loss.report(&self.topic, lost)?;
            }
            if decision.reset {
                reset.insert(p, facts.low - 1);
            }
            if decision.record {
                record.insert(p, decision.start - 1);
            }
            lows.insert(p, facts.low);
            starts.insert(p, decision.start);
        }
        // Resets first: a table moved back must count when the lowest start is recorded.
        if !reset.is_empty() {
            self.store
                .record(&reset, Record::Exactly, fingerprint)
                .map_err(ReadError::Tables)?;
        }
        if !record.is_empty() {
            let held = self.store.record(&record, Record::Start, fingerprint);
            for (p, last) in held.map_err(ReadError::Tables)? {
                starts.insert(p, last + 1);
            }
        }
        for (&p, &start) in &starts {
            let seek = lows[&p].max(start - i64::from(self.seek_rewind));
            tpl.set_partition_offset(&self.topic, p, Offset::Offset(seek))
                .map_err(|cause| ReadError::Broker {
                    what: format!("cannot position partition {p}"),
                    cause,
                })?;
        }
        Ok(starts)
    }

    /// What deciding where `partition` starts needs: its bounds, and its end and the
    /// offset of a start time only when the decision turns on them.
    fn facts(
        &self,
        consumer: &BaseConsumer<Self>,
        partition: i32,
        committed: super::Committed,
        id: Option<TopicId>,
    ) -> Result<Facts, ReadError> {
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, partition, Duration::from_secs(10))
            .map_err(|cause| ReadError::Broker {
                what: format!("cannot read the watermarks of partition {partition}"),
                cause,
            })?;
        let start = self.start_of(partition);
        let end = match needs_end(&committed, high, start) {
            true => super::ends::partition_end(&self.probe, &self.topic, partition)?.max(high),
            false => high,
        };
        let time_start = match (committed.lowest, start) {
            (None, Start::Time(millis)) => {
                let bounds = BTreeMap::from([(partition, super::Bounds { low, end })]);
                let starts = super::offsets_for_time(
                    &self.probe,
                    &self.topic,
                    millis,
                    &bounds,
                    self.seek_rewind,
                )?;
                let start = starts.get(&partition).copied().unwrap_or(low);
                info!(topic = %self.topic, partition, millis, start, "starting at the first record of the configured time");
                Some(start)
            }
            _ => None,
        };
        Ok(Facts {
            partition,
            committed,
            low,
            high,
            end,
            start,
            time_start,
            topic_id: id.map(|i| i.to_string()).unwrap_or_default(),
        })
    }

    /// Where a partition the tables have never recorded starts: as configured, but a
    /// partition added while running (or of a topic created since) starts at its first
    /// record whatever `starting_offsets` says, as Spark does: its records all came
    /// after the run started, and "latest" would skip those produced before the
    /// consumer noticed the partition (up to topic.metadata.refresh.interval.ms).
    fn start_of(&self, partition: i32) -> Start {
        let configured = self.starting.for_partition(partition);
        if partition < self.lock().known_partitions || configured == Start::Earliest {
            return configured;
        }
        info!(topic = %self.topic, partition, "partition added while running: reading it from its first record");
        Start::Earliest
    }
}

pub(super) fn lock(state: &Mutex<AssignState>) -> MutexGuard<'_, AssignState> {
    // A panic while holding the lock leaves plain data behind; keep going with it.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientContext for SourceContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        super::client::log_librdkafka(level, facility, message);
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        KafkaContext::token(self.probe.context().auth())
    }

    /// librdkafka's statistics (every `statistics.interval.ms`) carry each partition's
    /// high watermark: lag without a request per batch.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let highs = super::ends::fetched_highs(&statistics, &self.topic);
        self.lock().high.extend(highs);
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let positions = self.position_partitions(consumer, tpl);
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                let mut state = self.lock();
                state.generation += 1;
                if !cooperative {
                    state.assigned.clear();
                }
                match (positions, result) {
                    (Ok(positions), Ok(())) => {
                        info!(topic = %self.topic, starts = ?positions, "partitions assigned");
                        let generation = state.generation;
                        for (p, start) in positions {
                            state.since.insert(p, generation);
                            state.assigned.insert(p);
                            state.positioned.insert(p);
                            state.starts.insert(p, start);
                        }
                    }
                    (Err(e), _) => state.error = Some(e),
                    (_, Err(cause)) => {
                        state.error = Some(ReadError::Broker {
                            what: "assign failed".into(),
                            cause,
                        })
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                info!(topic = %self.topic, partitions = ?revoked, "partitions revoked");
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    warn!(topic = %self.topic, error = %crate::report::Report(&e), "unassign failed");
                }
                let mut state = self.lock();
                state.generation += 1;
                for p in revoked {
                    state.assigned.remove(&p);
                    state.starts.remove(&p);
                    state.since.remove(&p);
                }
            }
            other => {
                error!(topic = %self.topic, error = ?other, "rebalance error");
                if let Err(e) = consumer.unassign() {
                    warn!(topic = %self.topic, error = %crate::report::Report(&e), "unassign failed");
                }
                let mut state = self.lock();
                state.generation += 1;
                state.assigned.clear();
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        // The table is the source of truth; a failed group commit only delays lag tools.
        if let Err(e) = result {
            warn!(topic = %self.topic, error = %crate::report::Report(&e), "offset commit to the consumer group failed");
        }
    }
}
