//! The reader's checks that offsets are what they seem: gaps (markers and compaction,
//! or records retention deleted), a partition that goes back, a topic recreated under
//! the reader. Each is loss only where records the tables never saw are gone from the
//! log; then the data-loss policy decides, and the tables are reset where they must be.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::consumer::KafkaSource;
use super::context::lock;
use super::loss::Lost;
use super::offsets::Record;
use super::position::{Admit, Positions};
use super::{ReadError, SourceError, TopicId};

/// Whether the gaps of the batch are markers, aborted or compacted records (true),
/// or loss the policy lets pass; an error when retention deleted records before they
/// were read and the policy says to stop. One request for the whole batch, on a
/// connection of its own (the consumer's would answer after its held fetch).
pub(super) fn check_gaps(
    source: &KafkaSource,
    offsets: &mut Positions,
    stop: &CancellationToken,
) -> Result<bool, SourceError> {
    let gaps = offsets.take_gaps();
    if gaps.is_empty() {
        return Ok(true);
    }
    let topic = &source.settings.topic;
    let lows = loop {
        match super::first_offsets(&source.ids, topic, gaps.keys().copied()) {
            Ok(lows) => break lows,
            Err(e) if !stop.is_cancelled() => {
                warn!(topic = %topic, error = %crate::report::Report(&e), "cannot read the partitions' first offsets; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(_) => return Ok(false),
        }
    };
    for (p, gap) in gaps {
        let Some(&low) = lows.get(&p) else {
            continue;
        };
        if low > gap.from {
            lost(
                source,
                Lost::Skipped {
                    partition: p,
                    from: gap.from,
                    to: low.min(gap.to),
                },
            )?;
        } else {
            debug!(
                partition = p,
                from = gap.from,
                to = gap.to,
                "offsets without records (compaction or transaction markers)"
            );
        }
    }
    Ok(true)
}

/// Whether the topic was deleted and recreated since its id was last read. Then
/// (unless the data-loss policy stops the reader) every table starts the assigned
/// partitions over at the new topic's first record, recorded before it is read.
pub(super) fn recreated(
    source: &KafkaSource,
    offsets: &mut Positions,
    stop: &CancellationToken,
) -> Result<bool, SourceError> {
    let topic = &source.settings.topic;
    // Without the id the batch cannot be stamped: wait for the broker (as a fetch
    // would); on shutdown the batch is dropped and read again on restart.
    let now = loop {
        // Serves its events (a token refresh) between requests.
        let _ = source.ids.poll(Duration::ZERO);
        match super::topic_id(source.ids.client(), topic, Duration::from_secs(10)) {
            Ok(now) => break now,
            Err(e) if !stop.is_cancelled() => {
                warn!(topic = %topic, error = %crate::report::Report(&e), "cannot read the topic's id; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(_) => return Ok(true),
        }
    };
    let (was, assigned) = {
        let mut state = lock(&source.state);
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
    lost(
        source,
        Lost::Recreated {
            was: was.to_string(),
            now: now.to_string(),
        },
    )?;
    let mut starts = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &assigned {
        // The new topic may have fewer partitions: those are revoked by the next
        // rebalance, nothing to reset.
        let low = match source
            .ids
            .fetch_watermarks(topic, p, Duration::from_secs(10))
        {
            Ok((low, _)) => low,
            Err(e) => {
                warn!(topic = %topic, partition = p, error = %crate::report::Report(&e), "partition not in the recreated topic");
                continue;
            }
        };
        starts.insert(p, low);
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .map_err(SourceError::kafka(topic))?;
    }
    let last = starts.iter().map(|(&p, &low)| (p, low - 1)).collect();
    source
        .consumer
        .context()
        .store
        .record(&last, Record::Exactly, Some(now.fingerprint()))
        .map_err(|e| SourceError::read(topic)(ReadError::Tables(e)))?;
    if !starts.is_empty() {
        source
            .consumer
            .seek_partitions(tpl, Duration::from_secs(10))
            .map_err(SourceError::kafka(topic))?;
    }
    info!(topic = %topic, starts = ?starts, "reading the recreated topic from its start");
    for (p, low) in starts {
        offsets.restart(p, low);
    }
    Ok(true)
}

/// Whether to keep record `offset` of `partition`; an error when the partition goes
/// back (a recreated topic) and the policy says to stop. Gaps are checked when the
/// batch closes.
pub(super) fn keep(
    source: &KafkaSource,
    offsets: &mut Positions,
    (partition, offset): (i32, i64),
    suspect: &mut bool,
) -> Result<bool, SourceError> {
    let (expected, below_start) =
        match offsets.admit(partition, offset, source.settings.seek_rewind) {
            Admit::Keep => return Ok(true),
            Admit::Skip => return Ok(false),
            Admit::Back {
                expected,
                below_start,
            } => (expected, below_start),
        };
    if below_start && lock(&source.state).topic_id.is_some() {
        // Below what the tables hold: a topic recreated (librdkafka reset to its
        // start), which the topic's id tells at once; its records are read again
        // after the reset.
        *suspect = true;
        return Ok(false);
    }
    if !shrunk(source, partition, expected)? {
        if below_start {
            return Ok(false);
        }
        // A re-delivery (librdkafka does that around re-positioning), which the
        // batch and the table's offsets absorb.
        offsets.resume_at(partition, offset);
        return Ok(true);
    }
    lost(
        source,
        Lost::WentBack {
            partition,
            was: expected - 1,
            offset,
        },
    )?;
    // Without a restart the table's offsets would drop the new records as
    // replays: make the table start over here, as an assignment would.
    let reset = BTreeMap::from([(partition, offset - 1)]);
    let id = lock(&source.state).topic_id.map(TopicId::fingerprint);
    source
        .consumer
        .context()
        .store
        .record(&reset, Record::Exactly, id)
        .map_err(|e| SourceError::read(&source.settings.topic)(ReadError::Tables(e)))?;
    offsets.resume_at(partition, offset);
    Ok(true)
}

/// Whether `partition`, delivering an offset below `expected`, now ends before
/// `expected`: a recreated topic. Otherwise it is a re-delivery (librdkafka does that
/// around re-positioning), which the batch and the table's offsets absorb.
fn shrunk(source: &KafkaSource, partition: i32, expected: i64) -> Result<bool, SourceError> {
    let probe = &source.consumer.context().probe;
    let end = super::ends::partition_end(probe, &source.settings.topic, partition)?;
    Ok(end < expected)
}

fn lost(source: &KafkaSource, lost: Lost) -> Result<(), SourceError> {
    source
        .settings
        .data_loss
        .report(&source.settings.topic, lost)
        .map_err(SourceError::read(&source.settings.topic))
}
