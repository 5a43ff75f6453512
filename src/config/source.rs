//! Sources: a topic, the declared schema of its messages, and how to read them (format,
//! time zone, schema evolution).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Kafka topic to read; or `topics`, or `topic_pattern` (exactly one of the three).
    #[serde(default)]
    pub topic: String,
    /// Several topics, each read by its own consumer into the source's pipelines.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Every topic whose name matches this regular expression (anchored), including
    /// topics created while `run` is running (looked for every `topic_refresh_interval`).
    pub topic_pattern: Option<String>,
    #[serde(default = "default_topic_refresh", with = "humantime_serde")]
    pub topic_refresh_interval: std::time::Duration,
    /// Declared message schema, one `"name TYPE [NOT NULL]"` entry per field. Types:
    /// string, int32, int64, double, boolean, date, timestamp. Fields not declared are ignored.
    /// Required for JSON; for a Schema Registry format the columns come from the
    /// registry's schema unless fields are declared here.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Messages larger than this go to the dead-letter table.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// IANA zone (`America/Los_Angeles`) that zone-less TIMESTAMP strings are read in,
    /// so they are stored as the true instants; unset: read as UTC. Strings with an
    /// offset or `Z` keep theirs.
    pub timezone: Option<String>,
    /// `json`: each message is one record. `debezium-json`: each message is a Debezium
    /// change event (`before`/`after`/`op`/`source.ts_ms`, with or without the
    /// `schema`/`payload` wrapper); the record is `after` (`before` for a delete), with
    /// the columns `cdc_op` (c, u, d, r) and `cdc_source_ts` added.
    /// `avro`, `protobuf`, `json-schema`: Confluent-framed messages (magic byte, schema
    /// id) whose schemas are in `[schema_registry]`.
    #[serde(default)]
    pub format: SourceFormat,
    /// The registry subject of the values: `topic` (`<topic>-value`), `record`
    /// (`record`) or `topic-record` (`<topic>-<record>`).
    #[serde(default)]
    pub subject_strategy: super::registry::SubjectStrategy,
    /// The record's full name (`namespace.Name`) for the `record` strategies.
    pub record: Option<String>,
    /// `off`: undeclared fields are ignored. `add_columns`: an undeclared field becomes
    /// a nullable column of the tables of the source's pipelines without SQL, added in
    /// the commit of the batch that first carries it.
    #[serde(default)]
    pub schema_evolution: SchemaEvolution,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaEvolution {
    #[default]
    Off,
    AddColumns,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    #[default]
    Json,
    DebeziumJson,
    Avro,
    Protobuf,
    JsonSchema,
}

impl SourceFormat {
    /// Confluent-framed: each message names its schema by a registry id.
    pub fn uses_registry(self) -> bool {
        matches!(self, Self::Avro | Self::Protobuf | Self::JsonSchema)
    }
}

fn default_topic_refresh() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn default_max_message_bytes() -> usize {
    1024 * 1024
}

/// Columns a debezium-json source adds to its declared fields: the operation and when
/// the source database made the change.
pub(super) const DEBEZIUM_COLUMNS: [(&str, &str); 2] = [
    ("cdc_op", "cdc_op STRING NOT NULL"),
    ("cdc_source_ts", "cdc_source_ts TIMESTAMP"),
];
