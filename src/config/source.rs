//! Sources: a topic, the declared schema of its messages, and how to read them (format,
//! time zone, schema evolution).

use serde::Deserialize;

use super::fields::FieldSpec;
use super::ConfigError;
use crate::decode::METADATA_COLUMNS;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Kafka topic to read.
    pub topic: String,
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

fn default_max_message_bytes() -> usize {
    1024 * 1024
}

/// Columns a debezium-json source adds to its declared fields: the operation and when
/// the source database made the change.
pub const DEBEZIUM_COLUMNS: [(&str, &str); 2] = [
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

    /// The parsed field declarations (the source's name is used in error messages).
    pub fn field_specs(&self, name: &str) -> Result<Vec<FieldSpec>, ConfigError> {
        let key = format!("sources.{name}.fields");
        if self.topic.trim().is_empty() {
            return Err(ConfigError::key(
                format!("sources.{name}.topic"),
                "must not be empty",
            ));
        }
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
