//! Kafka in and out: the micro-batching consumer, the replay producer and its inputs.

mod admin;
mod auth;
mod batch;
mod client;
mod consumer;
mod context;
mod count;
pub mod dataset;
mod ends;
mod offsets;
mod producer;
pub mod synthetic;
mod times;
mod topic_id;

pub use admin::{ensure_topic, matching_topics};
pub use auth::msk_token;
pub use batch::{OffsetRange, ProducedAt, RawBatch};
pub use client::{Connection, KafkaContext};
pub use consumer::{ConsumerSettings, KafkaSource, SourceHandle};
pub use context::DataLossPolicy;
pub use count::{count_topic, CountReport};
pub use ends::{partition_end, topic_bounds, topic_partitions, Bounds};
pub use offsets::{Committed, OffsetStore, Record};
pub use producer::{produce, ProduceOptions, ProduceReport, Rate};
pub use times::{offsets_for_time, topic_offsets_for_time};
pub use topic_id::{topic_id, TopicId};

use rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Kafka client for topic '{topic}': {cause}")]
    Kafka { topic: String, cause: KafkaError },
    #[error("topic '{topic}': {message}")]
    Assignment { topic: String, message: String },
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
    #[error("{task} panicked: {cause}")]
    Panicked { task: &'static str, cause: String },
    #[error("cannot read {path}: {message}")]
    Input { path: String, message: String },
    #[error("producing to '{topic}': {message}")]
    Produce { topic: String, message: String },
}

impl SourceError {
    pub(crate) fn kafka(topic: &str) -> impl FnOnce(KafkaError) -> Self + '_ {
        move |cause| Self::Kafka {
            topic: topic.to_string(),
            cause,
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
