//! Topic creation through the standard CreateTopics API.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{info, warn};

use super::{Connection, KafkaContext, SourceError};

/// Create `topic` with `partitions` unless it exists. Returns its partition count.
pub async fn ensure_topic(
    connection: &Connection,
    topic: &str,
    partitions: i32,
) -> Result<usize, SourceError> {
    let existing = super::topic_partitions(connection, topic)?.len();
    if existing > 0 {
        if existing != partitions as usize {
            warn!(
                topic,
                existing,
                requested = partitions,
                "topic exists with another partition count; using it as it is"
            );
        }
        return Ok(existing);
    }
    // rdkafka's admin client never polls for OAUTHBEARER token requests, so with a token
    // mechanism the topic must exist already (managed clusters usually create topics
    // through their own consoles anyway).
    if connection.context().auth().is_some() {
        return Err(SourceError::Produce {
            topic: topic.to_string(),
            message: "the topic does not exist and lakestream cannot create topics over \
                      OAUTHBEARER/AWS_MSK_IAM; create it with the cluster's tools"
                .into(),
        });
    }
    let admin: AdminClient<KafkaContext> = connection
        .client_config()
        .create_with_context(connection.context())
        .map_err(SourceError::kafka(topic))?;
    // No metadata request for the topic before this: the admin client is a producer to
    // librdkafka, and a producer's request makes a broker with auto-create on create the
    // topic with its own partition count. Replication -1: the cluster's default (managed
    // clusters refuse 1).
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(SourceError::kafka(topic))?;
    for result in results {
        match result {
            Ok(_) => info!(topic, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(SourceError::Produce {
                    topic: topic.to_string(),
                    message: format!("cannot create topic: {code}"),
                })
            }
        }
    }
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(SourceError::kafka(topic))?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    if count != partitions as usize {
        warn!(
            topic,
            existing = count,
            requested = partitions,
            "topic exists with another partition count; using it as it is"
        );
    }
    Ok(count)
}

/// The names of the cluster's topics that `pattern` matches (internal `__` topics
/// never), sorted.
pub fn matching_topics(
    connection: &Connection,
    pattern: &regex::Regex,
) -> Result<Vec<String>, SourceError> {
    let consumer = connection.consumer(super::ends::PROBE_GROUP, &[])?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(SourceError::kafka(pattern.as_str()))?;
    let mut topics: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|name| !name.starts_with("__") && pattern.is_match(name))
        .collect();
    topics.sort();
    Ok(topics)
}
