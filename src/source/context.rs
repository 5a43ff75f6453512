//! Rebalance handling: on every assignment, partitions start where the table says.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{error, info, warn};

use super::consumer::StartOffsets;
use crate::config::StartingOffsets;

/// What the consumer loop learns from rebalances.
#[derive(Debug, Default)]
pub struct AssignState {
    /// Bumped on every assign or revoke.
    pub generation: u64,
    pub assigned: BTreeSet<i32>,
    /// First offset to read per assigned partition.
    pub starts: HashMap<i32, i64>,
    /// High watermark per partition when it was assigned (`--until-caught-up` target).
    pub targets: HashMap<i32, i64>,
    /// A failure the consumer loop must stop on.
    pub error: Option<String>,
    /// Latest high watermark per partition, from librdkafka's statistics (for lag).
    pub high: HashMap<i32, i64>,
}

pub struct SourceContext {
    pub topic: String,
    pub starting: StartingOffsets,
    pub seek_rewind: u32,
    pub start_offsets: StartOffsets,
    pub state: Arc<Mutex<AssignState>>,
}

impl SourceContext {
    pub fn lock(&self) -> MutexGuard<'_, AssignState> {
        lock(&self.state)
    }

    /// Set the start offset of every partition in `tpl` from the table's `txn` records.
    fn position_partitions(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) -> Result<HashMap<i32, (i64, i64)>, String> {
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let last_committed = (self.start_offsets)(&partitions)?;
        let mut positions = HashMap::new();
        for &p in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                .map_err(|e| format!("cannot read watermarks of partition {p}: {e}"))?;
            let start = match (last_committed.get(&p).copied().flatten(), self.starting) {
                (Some(last), _) => last + 1,
                (None, StartingOffsets::Earliest) => low,
                (None, StartingOffsets::Latest) => high,
            };
            let seek = low.max(start - i64::from(self.seek_rewind));
            tpl.set_partition_offset(&self.topic, p, Offset::Offset(seek))
                .map_err(|e| format!("cannot position partition {p}: {e}"))?;
            positions.insert(p, (start, high));
        }
        Ok(positions)
    }
}

pub fn lock(state: &Mutex<AssignState>) -> MutexGuard<'_, AssignState> {
    // A panic while holding the lock leaves plain data behind; keep going with it.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientContext for SourceContext {
    /// librdkafka's statistics (every `statistics.interval.ms`) carry each partition's
    /// high watermark: lag without a request per batch.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let mut state = self.lock();
        for (&p, partition) in &topic.partitions {
            if p >= 0 && partition.hi_offset >= 0 {
                state.high.insert(p, partition.hi_offset);
            }
        }
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
                        info!(topic = %self.topic, partitions = ?positions, "partitions assigned (start, high watermark)");
                        for (p, (start, high)) in positions {
                            state.assigned.insert(p);
                            state.starts.insert(p, start);
                            state.targets.insert(p, high);
                        }
                    }
                    (Err(message), _) => state.error = Some(message),
                    (_, Err(e)) => state.error = Some(format!("assign failed: {e}")),
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
                    warn!(topic = %self.topic, error = %e, "unassign failed");
                }
                let mut state = self.lock();
                state.generation += 1;
                for p in revoked {
                    state.assigned.remove(&p);
                    state.starts.remove(&p);
                    state.targets.remove(&p);
                }
            }
            other => {
                error!(topic = %self.topic, error = ?other, "rebalance error");
                if let Err(e) = consumer.unassign() {
                    warn!(topic = %self.topic, error = %e, "unassign failed");
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
            warn!(topic = %self.topic, error = %e, "offset commit to the consumer group failed");
        }
    }
}
