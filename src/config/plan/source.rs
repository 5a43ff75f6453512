//! A source checked and typed: its topics (one, a list or a compiled pattern) and how
//! its records decode (fields parsed once, the zone resolved).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::super::fields::FieldSpec;
use super::super::kafka_columns::METADATA_COLUMNS;
use super::super::pipeline::{render_table, PipelineConfig, TOPIC};
use super::super::registry::SubjectStrategy;
use super::super::source::{SchemaEvolution, SourceConfig, SourceFormat, DEBEZIUM_COLUMNS};
use super::{check_name, RegistryPlan};
use crate::config::ConfigError;

/// A source: what to read and how to decode it.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    pub name: String,
    pub topics: Topics,
    /// How often a pattern is matched against the cluster's topics again.
    pub refresh_interval: Duration,
    /// The prefix of the consumer groups of its readers (`kafka.group_id`, plus the
    /// topic for one topic of a multi-topic source).
    pub group_prefix: String,
    pub decoder: DecoderSpec,
}

#[derive(Debug, Clone)]
pub enum Topics {
    One(String),
    /// Each read on its own, into tables that may name it (`raw_{topic}`).
    List(Vec<String>),
    /// Every topic whose whole name matches, including topics created later.
    Pattern(regex::Regex),
}

/// How the records of a source are decoded (every pipeline of a source decodes alike).
#[derive(Debug, Clone)]
pub struct DecoderSpec {
    pub fields: Vec<FieldSpec>,
    pub max_message_bytes: usize,
    /// The zone zone-less TIMESTAMP strings are read in (`None`: UTC).
    pub zone: Option<chrono_tz::Tz>,
    pub format: SourceFormat,
    /// Undeclared fields become columns (`schema_evolution = "add_columns"`).
    pub add_columns: bool,
    /// Where the schemas of a registry format are (`None` for JSON).
    pub registry: Option<RegistrySource>,
}

/// A registry format's registry and subject.
#[derive(Debug, Clone)]
pub struct RegistrySource {
    pub registry: Arc<RegistryPlan>,
    pub strategy: SubjectStrategy,
    /// The record's full name, for the record strategies.
    pub record: Option<String>,
}

impl RegistrySource {
    /// The subject of `topic`'s values.
    pub fn subject(&self, topic: &str) -> String {
        let record = self.record.as_deref().unwrap_or_default();
        match self.strategy {
            SubjectStrategy::Topic => format!("{topic}-value"),
            SubjectStrategy::Record => record.to_string(),
            SubjectStrategy::TopicRecord => format!("{topic}-{record}"),
        }
    }
}

impl SourcePlan {
    /// Source `name`; `pipelines` are checked for per-topic tables its topics would share.
    pub(super) fn compile(
        name: &str,
        s: &SourceConfig,
        group_prefix: &str,
        pipelines: &BTreeMap<String, PipelineConfig>,
        registry: &Option<Arc<RegistryPlan>>,
    ) -> Result<Self, ConfigError> {
        check_name(&format!("sources.{name}"), name, true)?;
        let tables = pipelines
            .values()
            .map(|p| (p.source.as_str(), p.table.as_str()));
        if let Some((table, topics)) = collisions(tables, name, &s.topics).pop_first() {
            return Err(ConfigError::key(
                format!("sources.{name}.topics"),
                format!(
                    "topics {topics:?} would all write table '{table}' (characters other \
                     than letters, digits and _ become _): remove one, or name the table \
                     differently"
                ),
            ));
        }
        let topics = topics(name, s)?;
        let fields = match s.format.uses_registry() {
            true if !s.fields.is_empty() => {
                return Err(ConfigError::key(
                    format!("sources.{name}.fields"),
                    "this format's columns come from the Schema Registry: remove fields",
                ))
            }
            true => Vec::new(),
            false => fields(name, s)?,
        };
        let registry = registry_source(name, s, registry)?;
        let zone = zone(name, s.timezone.as_deref())?;
        if s.max_message_bytes == 0 {
            return Err(ConfigError::key(
                format!("sources.{name}.max_message_bytes"),
                "must be at least 1",
            ));
        }
        Ok(Self {
            name: name.to_string(),
            topics,
            refresh_interval: s.topic_refresh_interval,
            group_prefix: group_prefix.to_string(),
            decoder: DecoderSpec {
                fields,
                max_message_bytes: s.max_message_bytes,
                zone,
                format: s.format,
                add_columns: s.schema_evolution == SchemaEvolution::AddColumns,
                registry,
            },
        })
    }

    /// The one topic a single-topic source reads (empty for several).
    pub fn topic(&self) -> &str {
        match &self.topics {
            Topics::One(topic) => topic,
            _ => "",
        }
    }

    /// Several topics (a list or a pattern): each is read on its own, and a pipeline's
    /// `table` may name it (`raw_{topic}`).
    pub fn is_multi_topic(&self) -> bool {
        !matches!(self.topics, Topics::One(_))
    }

    /// This source reading only `topic`, its readers in groups of their own.
    pub fn for_topic(&self, topic: &str) -> Self {
        Self {
            topics: Topics::One(topic.to_string()),
            group_prefix: format!("{}.{}", self.group_prefix, render_table(TOPIC, topic)),
            ..self.clone()
        }
    }
}

/// A registry format needs `[schema_registry]`, and the record strategies a `record`.
fn registry_source(
    name: &str,
    s: &SourceConfig,
    registry: &Option<Arc<RegistryPlan>>,
) -> Result<Option<RegistrySource>, ConfigError> {
    if !s.format.uses_registry() {
        return Ok(None);
    }
    let Some(registry) = registry else {
        return Err(ConfigError::key(
            format!("sources.{name}.format"),
            "this format reads its schemas from a Schema Registry: add a [schema_registry] \
             section with its url",
        ));
    };
    let needs_record = s.subject_strategy != SubjectStrategy::Topic;
    if needs_record && s.record.as_deref().is_none_or(str::is_empty) {
        return Err(ConfigError::key(
            format!("sources.{name}.record"),
            "the record and topic-record subject strategies need the record's full name \
             (namespace.Name)",
        ));
    }
    Ok(Some(RegistrySource {
        registry: registry.clone(),
        strategy: s.subject_strategy,
        record: s.record.clone(),
    }))
}

/// Exactly one of `topic`, `topics` and `topic_pattern` (anchored at both ends).
fn topics(name: &str, s: &SourceConfig) -> Result<Topics, ConfigError> {
    let given = [
        !s.topic.trim().is_empty(),
        !s.topics.is_empty(),
        s.topic_pattern.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ConfigError::key(
            format!("sources.{name}.topic"),
            "set exactly one of topic, topics (a list) and topic_pattern (a regex)",
        ));
    }
    if s.topics.iter().any(|t| t.trim().is_empty()) {
        return Err(ConfigError::key(
            format!("sources.{name}.topics"),
            "a topic name is empty",
        ));
    }
    if s.topic_refresh_interval.is_zero() {
        return Err(ConfigError::key(
            format!("sources.{name}.topic_refresh_interval"),
            "must be positive",
        ));
    }
    Ok(match &s.topic_pattern {
        Some(p) => Topics::Pattern(regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
            ConfigError::key(format!("sources.{name}.topic_pattern"), e.to_string())
        })?),
        None if !s.topics.is_empty() => Topics::List(s.topics.clone()),
        None => Topics::One(s.topic.clone()),
    })
}

/// The declared fields, parsed; a debezium-json source adds its change columns.
fn fields(name: &str, s: &SourceConfig) -> Result<Vec<FieldSpec>, ConfigError> {
    let key = format!("sources.{name}.fields");
    if s.fields.is_empty() {
        return Err(ConfigError::key(key, "declare at least one field"));
    }
    let mut specs: Vec<FieldSpec> = Vec::with_capacity(s.fields.len());
    for text in &s.fields {
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
    if s.format == SourceFormat::DebeziumJson {
        for (column, text) in DEBEZIUM_COLUMNS {
            if specs.iter().any(|s| s.name == column) {
                return Err(ConfigError::key(
                    &key,
                    format!("'{column}' is added by format = \"debezium-json\": rename the field"),
                ));
            }
            specs.push(FieldSpec::parse(text).map_err(|m| ConfigError::key(&key, m))?);
        }
    }
    Ok(specs)
}

/// The parsed `timezone` (`None`: zone-less times are UTC).
fn zone(name: &str, timezone: Option<&str>) -> Result<Option<chrono_tz::Tz>, ConfigError> {
    timezone
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

/// For each table two or more of `topics` would name through the per-topic tables
/// (`raw_{topic}`) of `source` among `tables` (source, table), those topics.
pub(super) fn collisions<'a, 't>(
    tables: impl Iterator<Item = (&'a str, &'a str)>,
    source: &str,
    topics: impl IntoIterator<Item = &'t String>,
) -> BTreeMap<String, Vec<String>> {
    let templates: Vec<&str> = tables
        .filter(|(s, table)| *s == source && table.contains(TOPIC))
        .map(|(_, table)| table)
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
