//! Configuration: plain serde structs, loaded from TOML, overridden from the command line
//! (`--set section.key=value`) and the environment (`LAKESTREAM__SECTION__KEY`), and
//! validated and compiled once into a typed `Plan` at start-up. Every error names the
//! key at fault.

mod fields;
pub mod kafka_columns;
mod load;
mod pipeline;
mod plan;
mod schedule;
mod security;
mod service;
mod source;
mod validate;
mod validate_pipeline;

use std::collections::BTreeMap;

use serde::Deserialize;

pub use fields::{arrow_schema as fields_schema, is_identifier, json_schema, FieldSpec, FieldType};
pub use load::{load, load_str};
pub use pipeline::{
    render_table, Derived, LookupConfig, LookupFormat, OutputMode, PipelineConfig, TOPIC,
};
pub use plan::{
    CommitPolicy, DecoderSpec, Mode, PipelinePlan, Plan, QuerySpec, ReaderPlan, SourcePlan, Topics,
    Trigger,
};
pub use schedule::{Cron, Schedule};
pub use security::{
    expand_home, read_secret, AwsConfig, Mechanism, OauthConfig, Protocol, SecurityConfig,
};
pub use service::{
    parse_time, CompactConfig, HttpConfig, IsolationLevel, KafkaConfig, MaintenanceConfig,
    MysqlConfig, MysqlTls, Start, StartingOffsets, StorageConfig, TableMaintenance, VacuumConfig,
};
pub use source::{SchemaEvolution, SourceConfig, SourceFormat};

/// Everything lakestream reads from `config/lakestream.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How to reach the Kafka cluster.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Where tables live and how their files are written.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Topics and the declared schema of their JSON messages, by source name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Streaming pipelines, by pipeline name.
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// Static lookup tables that pipeline SQL can join with, by table name.
    #[serde(default)]
    pub lookups: BTreeMap<String, LookupConfig>,
    /// The MySQL/MariaDB mirror of pipeline tables and the BI views over it.
    pub mysql: Option<MysqlConfig>,
    /// Compaction, vacuum and checkpoints of the tables, scheduled inside `run`.
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    /// The status page, `/status`, `/metrics` and `/health` served by `run`.
    #[serde(default)]
    pub http: HttpConfig,
    /// The bytes in flight `run` may hold (prefetched, raw, decoded, queued and
    /// committing batches), shared by its readers: `256MiB`, `1GiB` or a number of bytes.
    #[serde(default = "default_memory_limit", deserialize_with = "byte_size")]
    pub memory_limit: bytesize::ByteSize,
}

fn default_memory_limit() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(256)
}

/// A size as a number of bytes or a string with a unit, with an error that says how.
fn byte_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bytesize::ByteSize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(n) => Ok(bytesize::ByteSize(n)),
        Raw::Text(text) => text.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "'{text}' is not a size: write e.g. \"256MiB\", \"1GiB\" or a number of bytes"
            ))
        }),
    }
}

/// Below this a reader's share cannot hold a fetch and a batch of 1 MiB messages.
pub const MIN_MEMORY_LIMIT: u64 = 16 << 20;

impl Config {
    /// Every table the pipelines write (outputs and dead letters), by template.
    fn tables(&self) -> BTreeMap<String, String> {
        self.pipelines
            .iter()
            .flat_map(|(name, p)| {
                [
                    (p.table.clone(), name.clone()),
                    (p.dead_letter_table(), name.clone()),
                ]
            })
            .collect()
    }

    /// Topics of `source`'s list whose per-topic tables would be one table.
    fn topic_collisions(&self, source: &str, topics: &[String]) -> BTreeMap<String, Vec<String>> {
        let tables = self
            .pipelines
            .values()
            .map(|p| (p.source.as_str(), p.table.as_str()));
        plan::collisions(tables, source, topics)
    }
}

/// A configuration problem, always naming the key (or file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("bad override '{text}': {message}")]
    Override { text: String, message: String },
    #[error("config key '{key}': {message}")]
    Key { key: String, message: String },
}

/// A value that does not parse, saying what was expected: the error of the config's small
/// grammars (fields, schedules, start positions), which the caller puts under its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<ParseError> for String {
    fn from(e: ParseError) -> Self {
        e.0
    }
}

impl ConfigError {
    pub(crate) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}
