//! Before anything is created: does the topic exist, and may this client read it as a
//! member of its group? Authorization does not heal by waiting, so a refusal is an error
//! at once, naming the ACL to add; a consumer would otherwise retry it for ever.

use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::{Connection, SourceError};

/// The topic's partition count, once the topic exists and the group may read it.
pub fn check_access(
    connection: &Connection,
    topic: &str,
    group: &str,
) -> Result<usize, SourceError> {
    let consumer = connection.consumer(group, &[])?;
    // By name: consumers never ask the broker to create a topic
    // (allow.auto.create.topics is off), and the answer tells "unknown" from "denied".
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|cause| connection.unreachable(cause, None))?;
    let denied = |what: String, hint: String| SourceError::Access {
        topic: topic.to_string(),
        what,
        hint,
    };
    let user = connection.user();
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(unknown(topic));
    };
    match t.error() {
        None => {}
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => {
            return Err(denied(
                format!("{user} may not read the topic (TopicAuthorizationFailed)"),
                format!("grant it READ and DESCRIBE on topic '{topic}' (kafka-acls.sh --add --allow-principal User:<name> --operation Read --operation Describe --topic {topic})"),
            ))
        }
        Some(_) => return Err(unknown(topic)),
    }
    let partitions = t.partitions().len();
    if partitions == 0 {
        return Err(unknown(topic));
    }
    // OffsetFetch: what a member does first; refused when the group is not allowed.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Invalid)
        .map_err(SourceError::kafka(topic))?;
    // A group's coordinator may be moving or loading (NotCoordinator,
    // CoordinatorLoadInProgress): that heals within seconds.
    let started = std::time::Instant::now();
    let answer = loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Err(KafkaError::OffsetFetch(code))
                if is_transient(code) && started.elapsed() < COORDINATOR_PATIENCE =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            answer => break answer,
        }
    };
    match answer {
        Ok(_) => Ok(partitions),
        Err(KafkaError::OffsetFetch(RDKafkaErrorCode::GroupAuthorizationFailed)) => Err(denied(
            format!("{user} may not read as consumer group '{group}' (GroupAuthorizationFailed)"),
            format!("grant it READ on group '{group}' (kafka-acls.sh --add --allow-principal User:<name> --operation Read --group {group}), or set kafka.group_id to a group it may use"),
        )),
        Err(KafkaError::OffsetFetch(RDKafkaErrorCode::TopicAuthorizationFailed)) => Err(denied(
            format!("{user} may not read the topic (TopicAuthorizationFailed)"),
            format!("grant it READ and DESCRIBE on topic '{topic}'"),
        )),
        Err(cause) => Err(connection.unreachable(cause, None)),
    }
}

/// How long a coordinator that is moving or loading is waited for.
const COORDINATOR_PATIENCE: Duration = Duration::from_secs(30);

fn is_transient(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
    )
}

fn unknown(topic: &str) -> SourceError {
    SourceError::Access {
        topic: topic.to_string(),
        what: "the topic does not exist".into(),
        hint: "create it (`lakestream produce` creates it with --partitions), or fix the \
               topic in the source's config (sources.<name>.topic)"
            .into(),
    }
}
