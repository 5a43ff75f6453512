//! Kafka in and out: the micro-batching consumer, the replay producer and its inputs.

mod admin;
mod batch;
mod consumer;
mod context;
mod count;
pub mod dataset;
mod producer;
pub mod synthetic;

pub use admin::ensure_topic;
pub use batch::{OffsetRange, RawBatch};
pub use consumer::{ConsumerSettings, KafkaSource, SourceHandle, StartOffsets};
pub use count::{count_topic, CountReport};
pub use producer::{produce, ProduceOptions, ProduceReport, Rate};

use rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Kafka client for topic '{topic}': {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic '{topic}': {message}")]
    Assignment { topic: String, message: String },
    #[error("cannot read {path}: {message}")]
    Input { path: String, message: String },
    #[error("producing to '{topic}': {message}")]
    Produce { topic: String, message: String },
}

impl SourceError {
    pub(crate) fn kafka(topic: &str) -> impl FnOnce(KafkaError) -> Self + '_ {
        move |source| Self::Kafka {
            topic: topic.to_string(),
            source,
        }
    }
}
