//! Kafka in: the micro-batching consumer, its offsets and the broker probes it needs
//! (the demo's producer lives in `demo`).

mod access;
mod admin;
mod auth;
mod batch;
mod checks;
mod client;
mod consumer;
mod context;
mod ends;
mod faults;
mod loss;
mod offsets;
mod position;
mod start;
mod times;
mod topic_id;

pub use access::check_access;
pub use admin::{ensure_topic, matching_topics};
pub use auth::{msk_token, Auth};
pub use batch::{OffsetRange, ProducedAt, RawBatch};
pub use client::{Connection, KafkaContext};
pub use consumer::{ConsumerSettings, KafkaSource, SourceHandle};
pub use ends::{first_offsets, partition_end, topic_bounds, topic_partitions, Bounds};
pub use loss::{DataLoss, DataLossPolicy, Lost};
pub use offsets::{Committed, OffsetStore, Record};
pub use times::{offsets_for_time, topic_offsets_for_time};
pub use topic_id::{topic_id, TopicId};

use rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Kafka client for topic '{topic}': {cause}")]
    Kafka { topic: String, cause: KafkaError },
    #[error("topic '{topic}'")]
    Assignment {
        topic: String,
        #[source]
        cause: Box<ReadError>,
    },
    #[error(
        "librdkafka refused the client settings ({cause}); check kafka.options and \
         kafka.security"
    )]
    Settings { cause: KafkaError },
    #[error("cannot connect to Kafka at {brokers} over {how}: {reason}. What to check: {hint}")]
    Unreachable {
        brokers: String,
        /// Listener kind and mechanism (`SASL_SSL SCRAM-SHA-512 as user 'x'`).
        how: String,
        /// The broker's or the TLS library's words.
        reason: String,
        hint: String,
    },
    /// The cluster answered, and said no (or that the topic is not there).
    #[error("topic '{topic}': {what}. What to do: {hint}")]
    Access {
        topic: String,
        what: String,
        hint: String,
    },
    #[error("{task} panicked: {cause}")]
    Panicked { task: &'static str, cause: String },
    #[error("cannot read {path}: {message}")]
    Input { path: String, message: String },
    #[error("producing to '{topic}': {message}")]
    Produce { topic: String, message: String },
}

/// Why reading a topic cannot go on (the cause of [`SourceError::Assignment`]).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Records were lost before they were ingested and `kafka.fail_on_data_loss` says
    /// to stop.
    #[error(
        "data loss: {0}. The pipeline stops so the gap is not silent; to skip the lost \
         records and go on from the earliest record still there, set \
         kafka.fail_on_data_loss = false (they stay lost)"
    )]
    DataLoss(DataLoss),
    #[error(
        "partition {partition}: kafka.starting_offsets asks for offset {offset} but the \
         partition ends at {end}; fix the offset (or use \"latest\")"
    )]
    StartPastEnd {
        partition: i32,
        offset: i64,
        end: i64,
    },
    /// A record batch this client cannot decode (codec, corruption): never skipped.
    #[error(
        "cannot decode the record batch at {at}: {what} ({cause}). The pipeline stops \
         rather than skip it; reading resumes there after a restart"
    )]
    Undecodable {
        at: String,
        what: &'static str,
        #[source]
        cause: KafkaError,
    },
    /// A request to the broker failed (`what` names it).
    #[error("{what}")]
    Broker {
        what: String,
        #[source]
        cause: KafkaError,
    },
    /// The broker did not answer in time.
    #[error("{what}: no answer within {seconds}s")]
    NoAnswer { what: String, seconds: u64 },
    /// The tables' offsets could not be read or recorded.
    #[error("the tables' offsets")]
    Tables(#[source] StoreError),
    /// A probe beside the consumer failed.
    #[error(transparent)]
    Probe(Box<SourceError>),
}

/// What an [`OffsetStore`] fails with (the tables' own error, kept whole).
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

impl From<SourceError> for ReadError {
    fn from(e: SourceError) -> Self {
        Self::Probe(Box::new(e))
    }
}

impl SourceError {
    pub(crate) fn kafka(topic: &str) -> impl FnOnce(KafkaError) -> Self + '_ {
        move |cause| Self::Kafka {
            topic: topic.to_string(),
            cause,
        }
    }

    /// `cause` stops reading `topic`.
    pub(crate) fn read(topic: &str) -> impl FnOnce(ReadError) -> Self + '_ {
        move |cause| Self::Assignment {
            topic: topic.to_string(),
            cause: Box::new(cause),
        }
    }
}

/// Fail fast with a helpful message when no broker answers, instead of letting librdkafka
/// retry silently forever. Returns the topic's partition count (0: it does not exist yet).
pub(crate) fn check_broker<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    connection: &Connection,
    topic: &str,
) -> Result<usize, SourceError> {
    let metadata = client
        .fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
        .map_err(|cause| connection.unreachable(cause, None))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .sum())
}
