//! Sources: a topic, the declared schema of its messages, and how to read them (format,
//! time zone, schema evolution).

use serde::Deserialize;

use super::fields::FieldSpec;
use super::kafka_columns::METADATA_COLUMNS;
use super::ConfigError;

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
    #[serde(default)]
    pub format: SourceFormat,
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

impl SourceConfig {
    /// The parsed `timezone` (`None`: zone-less times are UTC).
    pub fn zone(&self, name: &str) -> Result<Option<chrono_tz::Tz>, ConfigError> {
        self.timezone
            .as_deref()
            .map(|zone| {
                zone.parse::<chrono_tz::Tz>().map_err(|_| {
                    ConfigError::key(
                        format!("sources.{name}.timezone"),
                        format!(
                            "'{zone}' is not an IANA time zone name (e.g. America/Los_Angeles, \
                             Europe/Berlin, UTC)"
                        ),
                    )
                })
            })
            .transpose()
    }

    /// Several topics (a list or a pattern): each is read on its own, and a pipeline's
    /// `table` may name it (`raw_{topic}`).
    pub fn is_multi_topic(&self) -> bool {
        !self.topics.is_empty() || self.topic_pattern.is_some()
    }

    /// `topic_pattern`, anchored at both ends.
    pub fn pattern(&self, name: &str) -> Result<Option<regex::Regex>, ConfigError> {
        self.topic_pattern
            .as_deref()
            .map(|p| {
                regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                    ConfigError::key(format!("sources.{name}.topic_pattern"), e.to_string())
                })
            })
            .transpose()
    }

    /// Exactly one of `topic`, `topics` and `topic_pattern`.
    fn check_topics(&self, name: &str) -> Result<(), ConfigError> {
        let given = [
            !self.topic.trim().is_empty(),
            !self.topics.is_empty(),
            self.topic_pattern.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ConfigError::key(
                format!("sources.{name}.topic"),
                "set exactly one of topic, topics (a list) and topic_pattern (a regex)",
            ));
        }
        if self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::key(
                format!("sources.{name}.topics"),
                "a topic name is empty",
            ));
        }
        if self.topic_refresh_interval.is_zero() {
            return Err(ConfigError::key(
                format!("sources.{name}.topic_refresh_interval"),
                "must be positive",
            ));
        }
        self.pattern(name).map(|_| ())
    }

    /// The parsed field declarations (the source's name is used in error messages).
    pub fn field_specs(&self, name: &str) -> Result<Vec<FieldSpec>, ConfigError> {
        let key = format!("sources.{name}.fields");
        self.check_topics(name)?;
        if self.fields.is_empty() {
            return Err(ConfigError::key(key, "declare at least one field"));
        }
        let mut specs: Vec<FieldSpec> = Vec::with_capacity(self.fields.len());
        for text in &self.fields {
            let spec = FieldSpec::parse(text).map_err(|m| ConfigError::key(&key, m))?;
            if specs.iter().any(|s| s.name == spec.name) {
                return Err(ConfigError::key(
                    &key,
                    format!("field '{}' is declared twice", spec.name),
                ));
            }
            if METADATA_COLUMNS.contains(&spec.name.as_str()) {
                return Err(ConfigError::key(
                    &key,
                    format!("'{}' is reserved for Kafka metadata", spec.name),
                ));
            }
            specs.push(spec);
        }
        if self.format == SourceFormat::DebeziumJson {
            for (name, text) in DEBEZIUM_COLUMNS {
                if specs.iter().any(|s| s.name == name) {
                    return Err(ConfigError::key(
                        &key,
                        format!(
                            "'{name}' is added by format = \"debezium-json\": rename the field"
                        ),
                    ));
                }
                specs.push(FieldSpec::parse(text).map_err(|m| ConfigError::key(&key, m))?);
            }
        }
        Ok(specs)
    }
}
