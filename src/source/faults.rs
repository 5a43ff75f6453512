//! Consume errors that retrying cannot heal: a batch this client cannot decode, and a
//! member the cluster no longer lets read.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::context::SourceContext;
use super::position::Positions;
use super::{ReadError, SourceError};

/// The error for a record batch librdkafka cannot decode. The client's error carries
/// no partition, so it names the assigned partitions that stopped short of their end:
/// the batch at such a partition's position is the one that failed.
pub(super) fn undecodable(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    error: &KafkaError,
    offsets: &Positions,
) -> SourceError {
    let mut stuck = Vec::new();
    for (p, position) in offsets.current() {
        let high = consumer
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

/// A consume error that says this client may not read.
pub(super) fn is_denied(error: &KafkaError) -> bool {
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
pub(super) fn is_undecodable(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::NotImplemented
                | RDKafkaErrorCode::BadMessage
                | RDKafkaErrorCode::BadCompression
        ) | KafkaError::MessageConsumptionFatal(_)
    )
}
