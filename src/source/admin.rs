//! Topic creation through the standard CreateTopics API.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tracing::{info, warn};

use super::SourceError;

/// Create `topic` with `partitions` unless it exists. Returns its partition count.
pub async fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> Result<usize, SourceError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(SourceError::kafka(topic))?;
    super::check_broker(admin.inner(), brokers, topic)?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
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
    config: &ClientConfig,
    pattern: &regex::Regex,
) -> Result<Vec<String>, SourceError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = config
        .create()
        .map_err(SourceError::kafka(pattern.as_str()))?;
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
