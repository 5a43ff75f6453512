//! The config compiled once: `config::load` checks the file (every error names the key)
//! and turns it into a `Plan` of typed values: topics as a list or a compiled pattern,
//! fields parsed, the time zone resolved, each pipeline's mode matched into one `Mode`.
//! Runtime code takes these values and never looks a setting up by name again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::fields::FieldSpec;
use super::kafka_columns;
use super::pipeline::{render_table, Derived, OutputMode, PipelineConfig, TOPIC};
use super::source::{SchemaEvolution, SourceConfig, SourceFormat};
use super::{
    Config, ConfigError, HttpConfig, KafkaConfig, LookupConfig, MaintenanceConfig, MysqlConfig,
    StorageConfig,
};

/// Everything a command needs, checked and parsed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kafka: KafkaConfig,
    pub storage: StorageConfig,
    pub lookups: BTreeMap<String, LookupConfig>,
    pub mysql: Option<MysqlConfig>,
    pub maintenance: MaintenanceConfig,
    pub http: HttpConfig,
    pub sources: BTreeMap<String, Arc<SourcePlan>>,
    pub pipelines: BTreeMap<String, Arc<PipelinePlan>>,
    /// `memory_limit` in bytes.
    pub memory_limit: u64,
}

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
}

/// A pipeline: where its records go and how each micro-batch changes its table.
#[derive(Debug, Clone)]
pub struct PipelinePlan {
    pub name: String,
    /// The name of its source (see `Plan::sources`).
    pub source: String,
    pub table: String,
    pub dead_letter_table: String,
    /// A consumer group of its own (`group_id`): it then reads alone.
    pub own_group: Option<String>,
    pub trigger: Trigger,
    /// The table's partition columns (derived ones by their names).
    pub partition_by: Vec<String>,
    /// Partition columns computed from the record (`date(...)`).
    pub derived: Vec<Derived>,
    /// Columns configured to be written without dictionary encoding.
    pub no_dictionary_columns: Vec<String>,
    /// Columns identifying an output row (the mirror's primary key).
    pub row_keys: Vec<String>,
    pub mode: Mode,
    pub commit: CommitPolicy,
}

/// When a micro-batch closes: the first limit reached.
#[derive(Debug, Clone, Copy)]
pub struct Trigger {
    pub interval: Duration,
    pub max_records: usize,
    pub max_bytes: usize,
}

/// How commits are retried and whose earlier commits a table accepts.
#[derive(Debug, Clone, Copy)]
pub struct CommitPolicy {
    pub retry_timeout: Duration,
    /// Take over a table written under another pipeline name or topic.
    pub adopt: bool,
    /// A table every topic of a multi-topic source writes: this pipeline's commits for
    /// the other topics are its own.
    pub shared_by_topics: bool,
}

/// How each micro-batch changes the table, decided once.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The decoded records are appended as they are.
    Append,
    /// Each record upserts its row by `keys`; one matching `delete_when` deletes it.
    Upsert {
        keys: Vec<String>,
        delete_when: Option<String>,
    },
    /// The pipeline's SQL runs over each batch; `output` says how its rows land.
    Query(QuerySpec),
}

#[derive(Debug, Clone)]
pub struct QuerySpec {
    pub sql_file: String,
    /// Append, update or complete.
    pub output: OutputMode,
    /// The MERGE keys of update mode (the GROUP BY columns).
    pub keys: Vec<String>,
    /// Event-time column and how late an event may be.
    pub watermark: Option<(String, Duration)>,
    /// A partition silent this long stops holding the watermark back.
    pub idle_timeout: Duration,
}

/// The pipelines that share one reader: one consumer, one decode.
#[derive(Debug, Clone)]
pub struct ReaderPlan {
    pub source: Arc<SourcePlan>,
    pub pipelines: Vec<Arc<PipelinePlan>>,
}

impl Plan {
    /// Check `config` (every error names the key) and compile it.
    pub fn compile(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let sources = config
            .sources
            .iter()
            .map(|(name, s)| {
                Ok((
                    name.clone(),
                    Arc::new(SourcePlan::compile(name, s, &config.kafka)?),
                ))
            })
            .collect::<Result<BTreeMap<_, _>, ConfigError>>()?;
        let pipelines = config
            .pipelines
            .iter()
            .map(|(name, p)| {
                let format = sources[&p.source].decoder.format;
                (
                    name.clone(),
                    Arc::new(PipelinePlan::compile(name, p, format)),
                )
            })
            .collect();
        Ok(Self {
            kafka: config.kafka,
            storage: config.storage,
            lookups: config.lookups,
            mysql: config.mysql,
            maintenance: config.maintenance,
            http: config.http,
            memory_limit: config.memory_limit.as_u64(),
            sources,
            pipelines,
        })
    }

    /// Every table the pipelines write (outputs and dead letters), with the pipeline
    /// that writes it; per-topic tables by their templates (`raw_{topic}`).
    pub fn tables(&self) -> BTreeMap<String, String> {
        self.pipelines
            .values()
            .flat_map(|p| p.tables().map(|t| (t, p.name.clone())))
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
                    && super::is_identifier(name)
            })
    }

    /// The pipeline named `name`, or an error naming the ones there are.
    pub fn pipeline(&self, name: &str) -> Result<&Arc<PipelinePlan>, ConfigError> {
        self.pipelines.get(name).ok_or_else(|| {
            let known: Vec<&String> = self.pipelines.keys().collect();
            ConfigError::key(
                format!("pipelines.{name}"),
                format!("no such pipeline (known: {known:?})"),
            )
        })
    }

    /// Which of `names` share a reader: those of one source, unless a pipeline names
    /// its own consumer group (then it reads alone in that group, as it asked).
    pub fn readers(&self, names: &[String]) -> Result<Vec<ReaderPlan>, ConfigError> {
        let mut readers: BTreeMap<(String, Option<String>), ReaderPlan> = BTreeMap::new();
        for name in names {
            let p = self.pipeline(name)?;
            let key = (p.source.clone(), p.own_group.as_ref().map(|_| name.clone()));
            readers
                .entry(key)
                .or_insert_with(|| ReaderPlan {
                    source: self.sources[&p.source].clone(),
                    pipelines: Vec::new(),
                })
                .pipelines
                .push(p.clone());
        }
        Ok(readers.into_values().collect())
    }

    /// Topics of `source` whose per-topic tables would be one table (`sf-a` and `sf_a`
    /// both make `raw_sf_a`): for each such table, the topics that name it, sorted.
    pub fn topic_collisions<'t>(
        &self,
        source: &str,
        topics: impl IntoIterator<Item = &'t String>,
    ) -> BTreeMap<String, Vec<String>> {
        let tables = self
            .pipelines
            .values()
            .map(|p| (p.source.as_str(), p.table.as_str()));
        collisions(tables, source, topics)
    }
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

impl SourcePlan {
    fn compile(name: &str, s: &SourceConfig, kafka: &KafkaConfig) -> Result<Self, ConfigError> {
        let topics = match s.pattern(name)? {
            Some(pattern) => Topics::Pattern(pattern),
            None if !s.topics.is_empty() => Topics::List(s.topics.clone()),
            None => Topics::One(s.topic.clone()),
        };
        Ok(Self {
            name: name.to_string(),
            topics,
            refresh_interval: s.topic_refresh_interval,
            group_prefix: kafka.group_id.clone(),
            decoder: DecoderSpec {
                fields: s.field_specs(name)?,
                max_message_bytes: s.max_message_bytes,
                zone: s.zone(name)?,
                format: s.format,
                add_columns: s.schema_evolution == SchemaEvolution::AddColumns,
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

impl PipelinePlan {
    fn compile(name: &str, p: &PipelineConfig, format: SourceFormat) -> Self {
        let mode = match (&p.sql, p.mode) {
            (None, OutputMode::Upsert) => Mode::Upsert {
                keys: p.keys.clone(),
                delete_when: p.delete_predicate(format),
            },
            (None, _) => Mode::Append,
            (Some(sql_file), output) => Mode::Query(QuerySpec {
                sql_file: sql_file.clone(),
                output,
                keys: p.keys.clone(),
                watermark: p.watermark_spec().map(|(c, d)| (c.to_string(), d)),
                idle_timeout: p.idle_timeout,
            }),
        };
        Self {
            name: name.to_string(),
            source: p.source.clone(),
            table: p.table.clone(),
            dead_letter_table: p.dead_letter_table(),
            own_group: p.group_id.clone(),
            trigger: Trigger {
                interval: p.trigger_interval,
                max_records: p.max_offsets_per_trigger,
                max_bytes: p.max_bytes_per_trigger,
            },
            partition_by: p.partition_columns(),
            derived: p.derived(),
            no_dictionary_columns: p.no_dictionary_columns.clone(),
            row_keys: p.row_keys(),
            mode,
            commit: CommitPolicy {
                retry_timeout: p.commit_retry_timeout,
                adopt: p.adopt,
                shared_by_topics: false,
            },
        }
    }

    /// The output mode as the config names it.
    pub fn output(&self) -> OutputMode {
        match &self.mode {
            Mode::Append => OutputMode::Append,
            Mode::Upsert { .. } => OutputMode::Upsert,
            Mode::Query(q) => q.output,
        }
    }

    /// Whether its commits keep a change data feed (the table's rows change in place).
    pub fn changes_rows(&self) -> bool {
        matches!(self.output(), OutputMode::Update | OutputMode::Upsert)
    }

    /// Columns written without dictionary encoding: the configured ones and the Kafka
    /// metadata columns that are near-unique.
    pub fn no_dictionary(&self) -> Vec<String> {
        const NEAR_UNIQUE_METADATA: [&str; 3] = [
            kafka_columns::OFFSET,
            kafka_columns::KEY,
            kafka_columns::TIMESTAMP,
        ];
        let metadata = NEAR_UNIQUE_METADATA.map(String::from);
        self.no_dictionary_columns
            .iter()
            .cloned()
            .chain(metadata)
            .collect()
    }

    /// Whether `table` names its topic (`raw_{topic}`): one table per topic.
    pub fn is_per_topic(&self) -> bool {
        self.table.contains(TOPIC)
    }

    /// Its table and its dead letters.
    pub fn tables(&self) -> [String; 2] {
        [self.table.clone(), self.dead_letter_table.clone()]
    }

    /// The consumer group it reads with alone, for a source whose groups start with
    /// `source.group_prefix`.
    pub fn group_id(&self, source: &SourcePlan) -> String {
        self.own_group
            .clone()
            .unwrap_or_else(|| format!("{}.{}", source.group_prefix, self.name))
    }

    /// This pipeline on one topic of its multi-topic source: its tables named for the
    /// topic, its own group too. A table every topic shares keeps each topic's offsets
    /// apart, so it takes this pipeline's commits for the other topics as its own;
    /// another pipeline's commits still need `adopt`.
    pub fn for_topic(&self, topic: &str) -> Self {
        let suffix = render_table(TOPIC, topic);
        Self {
            table: render_table(&self.table, topic),
            dead_letter_table: render_table(&self.dead_letter_table, topic),
            own_group: self.own_group.as_ref().map(|g| format!("{g}.{suffix}")),
            commit: CommitPolicy {
                shared_by_topics: !self.is_per_topic(),
                ..self.commit
            },
            ..self.clone()
        }
    }
}

impl ReaderPlan {
    /// The names of its pipelines.
    pub fn names(&self) -> Vec<String> {
        self.pipelines.iter().map(|p| p.name.clone()).collect()
    }

    /// The consumer group of the reader. One pipeline keeps its own group; several get
    /// one named after the source and all of them, so a process running a different set
    /// of pipelines never splits partitions with this one (each set must read every
    /// partition).
    pub fn group_id(&self) -> String {
        match self.pipelines.as_slice() {
            [one] => one.group_id(&self.source),
            _ => {
                let mut sorted = self.names();
                sorted.sort_unstable();
                format!(
                    "{}.{}.{}",
                    self.source.group_prefix,
                    self.source.name,
                    sorted.join("+")
                )
            }
        }
    }

    /// A batch closes at the smallest trigger and size any of its pipelines asks for,
    /// so none waits longer or holds more than it configured.
    pub fn trigger(&self) -> Trigger {
        let each = || self.pipelines.iter().map(|p| p.trigger);
        Trigger {
            interval: each().map(|t| t.interval).min().unwrap_or_default(),
            max_records: each().map(|t| t.max_records).min().unwrap_or(1),
            max_bytes: each().map(|t| t.max_bytes).min().unwrap_or(1),
        }
    }
}
