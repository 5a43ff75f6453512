//! The Kafka metadata columns every decoded row carries: part of the config's grammar
//! (a declared field may not take these names), filled by `decode::metadata`.

pub const TOPIC: &str = "kafka_topic";
pub const PARTITION: &str = "kafka_partition";
pub const OFFSET: &str = "kafka_offset";
pub const KEY: &str = "kafka_key";
pub const TIMESTAMP: &str = "kafka_timestamp";

/// Names a declared field may not take.
pub const METADATA_COLUMNS: [&str; 5] = [TOPIC, PARTITION, OFFSET, KEY, TIMESTAMP];
