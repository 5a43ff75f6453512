//! Data loss: records a table has not ingested that can no longer be read, named by
//! topic, partition and offsets, and what the policy (`kafka.fail_on_data_loss`) does.

use tracing::{error, warn};

use super::ReadError;

/// Records lost before they were ingested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataLoss {
    pub topic: String,
    pub lost: Lost,
}

/// What was lost, with the offsets that say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// The table resumes at `resume`, below the partition's first retained record.
    Deleted {
        partition: i32,
        resume: i64,
        low: i64,
    },
    /// A configured start offset below the partition's first retained record.
    StartDeleted {
        partition: i32,
        offset: i64,
        low: i64,
    },
    /// The table resumes at `resume`, past the partition's end.
    PastEnd {
        partition: i32,
        resume: i64,
        end: i64,
    },
    /// The tables' offsets were read from an earlier topic of this name (id `now` today).
    OldTopic { partition: i32, now: String },
    /// Offsets `from..to` were skipped while reading: retention deleted them.
    Skipped { partition: i32, from: i64, to: i64 },
    /// The topic's id changed while it was read.
    Recreated { was: String, now: String },
    /// A partition delivered `offset` after `was`, and now ends before `was`.
    WentBack {
        partition: i32,
        was: i64,
        offset: i64,
    },
}

impl std::fmt::Display for DataLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.lost {
            Lost::Deleted {
                partition,
                resume,
                low,
            } => write!(
                f,
                "partition {partition}: the table resumes at offset {resume} but the earliest \
                 record still in the topic is {low}; {} records were deleted (retention?) \
                 before they were ingested",
                low - resume
            ),
            Lost::StartDeleted {
                partition,
                offset,
                low,
            } => write!(
                f,
                "partition {partition}: kafka.starting_offsets asks for offset {offset} but \
                 the earliest record still in the topic is {low}"
            ),
            Lost::PastEnd {
                partition,
                resume,
                end,
            } => write!(
                f,
                "partition {partition}: the table resumes at offset {resume} but the \
                 partition ends at {end}; was the topic deleted and recreated?"
            ),
            Lost::OldTopic { partition, now } => write!(
                f,
                "partition {partition}: the tables' offsets were read from an earlier topic \
                 of this name (its id is now {now}): the topic was deleted and recreated, \
                 and what the old one held after those offsets is gone"
            ),
            Lost::Skipped {
                partition,
                from,
                to,
            } => write!(
                f,
                "partition {partition} skipped offsets {from}..{to}: retention deleted them \
                 before they were read"
            ),
            Lost::Recreated { was, now } => write!(
                f,
                "the topic was deleted and recreated while it was read (its id went from \
                 {was} to {now}); records of the old topic not yet committed are gone"
            ),
            Lost::WentBack {
                partition,
                was,
                offset,
            } => write!(
                f,
                "partition {partition} went back from offset {was} to {offset} and now ends \
                 before it; was the topic deleted and recreated?"
            ),
        }
    }
}

/// What to do when records the table has not ingested can no longer be read.
#[derive(Clone)]
pub struct DataLossPolicy {
    /// Stop the pipeline (`kafka.fail_on_data_loss`).
    pub fail: bool,
    /// Every case seen, failing or not (`lakestream_data_loss_events_total`), counted
    /// for each pipeline the reader feeds.
    pub events: Vec<prometheus_client::metrics::counter::Counter>,
}

impl DataLossPolicy {
    /// Log and count a loss; the error to stop on when the policy says so.
    pub fn report(&self, topic: &str, lost: Lost) -> Result<(), ReadError> {
        for events in &self.events {
            events.inc();
        }
        let loss = DataLoss {
            topic: topic.to_string(),
            lost,
        };
        if self.fail {
            error!(topic, "data loss: {loss}");
            Err(ReadError::DataLoss(loss))
        } else {
            warn!(
                topic,
                "data loss (kafka.fail_on_data_loss = false, going on): {loss}"
            );
            Ok(())
        }
    }
}
