//! Configuration: plain serde structs, loaded from TOML, overridden from the command line
//! (`--set section.key=value`) and the environment (`LAKESTREAM__SECTION__KEY`), and
//! validated once at start-up. Every error names the key at fault.

mod fields;
pub mod kafka_columns;
mod load;
mod pipeline;
mod schedule;
mod security;
mod service;
mod source;
mod validate;

use std::collections::BTreeMap;

use serde::Deserialize;

pub use fields::{arrow_schema as fields_schema, is_identifier, json_schema, FieldSpec, FieldType};
pub use load::{load, load_str};
pub use pipeline::{
    render_table, Derived, LookupConfig, LookupFormat, OutputMode, PipelineConfig, TOPIC,
};
pub use schedule::{Cron, Schedule};
pub use security::{read_secret, AwsConfig, Mechanism, OauthConfig, Protocol, SecurityConfig};
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
}

impl Config {
    /// Every table the pipelines write (outputs and dead letters), with the pipeline
    /// that writes it.
    pub fn tables(&self) -> BTreeMap<String, String> {
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

    /// Whether `name` is a table the pipelines write: a configured one, or one a
    /// per-topic table (`raw_{topic}`) names for some topic.
    pub fn is_table(&self, name: &str) -> bool {
        let tables = self.tables();
        tables.contains_key(name)
            || tables.keys().any(|t| {
                let Some((prefix, suffix)) = t.split_once(TOPIC) else {
                    return false;
                };
                name.len() > prefix.len() + suffix.len()
                    && name.starts_with(prefix)
                    && name.ends_with(suffix)
                    && is_identifier(name)
            })
    }

    /// The config one topic of a multi-topic source runs with: the source reads
    /// `topic`, its pipelines write their tables for it (`{topic}` filled in) and consume
    /// in groups of their own. A table shared by every topic keeps each topic's offsets
    /// apart (they are kept per topic), so it takes this pipeline's commits for the other
    /// topics as its own; another pipeline's commits still need `adopt`.
    pub fn for_topic(&self, source: &str, topic: &str) -> Config {
        let mut config = self.clone();
        if let Some(s) = config.sources.get_mut(source) {
            s.topic = topic.to_string();
            s.topics.clear();
            s.topic_pattern = None;
        }
        let suffix = render_table(TOPIC, topic);
        config.kafka.group_id = format!("{}.{suffix}", self.kafka.group_id);
        for p in config.pipelines.values_mut().filter(|p| p.source == source) {
            p.dead_letter_table = Some(render_table(&p.dead_letter_table(), topic));
            p.shared_by_topics = !p.is_per_topic();
            p.table = render_table(&p.table, topic);
            if let Some(group) = &mut p.group_id {
                *group = format!("{group}.{suffix}");
            }
        }
        config
    }

    /// Topics of `source` whose per-topic tables would be one table (`sf-a` and `sf_a`
    /// both make `raw_sf_a`): for each such table, the topics that name it, sorted.
    pub fn topic_collisions<'t>(
        &self,
        source: &str,
        topics: impl IntoIterator<Item = &'t String>,
    ) -> BTreeMap<String, Vec<String>> {
        let templates: Vec<&str> = self
            .pipelines
            .values()
            .filter(|p| p.source == source && p.is_per_topic())
            .map(|p| p.table.as_str())
            .collect();
        let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for topic in topics {
            for template in &templates {
                by_table
                    .entry(render_table(template, topic))
                    .or_default()
                    .push(topic.clone());
            }
        }
        by_table.retain(|_, topics| {
            topics.sort();
            topics.dedup();
            topics.len() > 1
        });
        by_table
    }

    /// The consumer group a pipeline reads with.
    pub fn group_id(&self, pipeline: &str) -> String {
        self.pipelines
            .get(pipeline)
            .and_then(|p| p.group_id.clone())
            .unwrap_or_else(|| format!("{}.{pipeline}", self.kafka.group_id))
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

impl ConfigError {
    pub(crate) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}
