//! A pipeline checked and typed: its tables, triggers, mode with the settings that go
//! with it, and the columns it names, checked against its source's parsed fields.

use std::time::Duration;

use super::super::fields::{FieldSpec, FieldType};
use super::super::kafka_columns::{self, METADATA_COLUMNS};
use super::super::pipeline::{render_table, Derived, OutputMode, PipelineConfig, TOPIC};
use super::super::source::SourceFormat;
use super::check_name;
use super::source::SourcePlan;
use crate::config::ConfigError;

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

impl PipelinePlan {
    /// Pipeline `name`, reading `source`.
    pub(super) fn compile(
        name: &str,
        p: &PipelineConfig,
        source: &SourcePlan,
    ) -> Result<Self, ConfigError> {
        let key = |k: &str| format!("pipelines.{name}.{k}");
        let dead_letter_table = p
            .dead_letter_table
            .clone()
            .unwrap_or_else(|| format!("{}_dead_letters", p.table));
        check_tables(name, p, &dead_letter_table, source)?;
        if let Some(group) = &p.group_id {
            check_name(&key("group_id"), group, false)?;
        }
        let trigger = Trigger {
            interval: p.trigger_interval,
            max_records: p.max_offsets_per_trigger,
            max_bytes: p.max_bytes_per_trigger,
        };
        trigger.check(name)?;
        let fields = &source.decoder.fields;
        let mode = mode(name, p, source)?;
        let partitions = partitions(name, p)?;
        let partition_by: Vec<String> = partitions.iter().map(|(n, _)| n.clone()).collect();
        let derived: Vec<Derived> = partitions.iter().filter_map(|(_, d)| d.clone()).collect();
        if p.sql.is_some() && !derived.is_empty() {
            return Err(ConfigError::key(
                key("partition_by"),
                "date(...) partitions records as they are read; a query selects its own \
                 partition column",
            ));
        }
        // A query's output columns come from the query: checked when it is planned; a
        // registry format's columns come from the registry: checked when the table opens.
        if p.sql.is_none() && !fields.is_empty() {
            check_columns(name, p, fields, &partitions)?;
        }
        let row_keys = match (&p.sql, p.keys.is_empty()) {
            (None, true) => vec![
                kafka_columns::PARTITION.into(),
                kafka_columns::OFFSET.into(),
            ],
            _ => p.keys.clone(),
        };
        Ok(Self {
            name: name.to_string(),
            source: p.source.clone(),
            table: p.table.clone(),
            dead_letter_table,
            own_group: p.group_id.clone(),
            trigger,
            partition_by,
            derived,
            no_dictionary_columns: p.no_dictionary_columns.clone(),
            row_keys,
            mode,
            commit: CommitPolicy {
                retry_timeout: p.commit_retry_timeout,
                adopt: p.adopt,
                shared_by_topics: false,
            },
        })
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

impl Trigger {
    fn check(&self, name: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("pipelines.{name}.{k}");
        if self.max_records == 0 {
            return Err(ConfigError::key(
                key("max_offsets_per_trigger"),
                "must be at least 1",
            ));
        }
        if self.max_bytes == 0 {
            return Err(ConfigError::key(
                key("max_bytes_per_trigger"),
                "must be at least 1",
            ));
        }
        if self.interval.is_zero() {
            return Err(ConfigError::key(
                key("trigger_interval"),
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// The pipeline's own name and its tables' names, per-topic tables as a topic names them.
fn check_tables(
    name: &str,
    p: &PipelineConfig,
    dead_letter_table: &str,
    source: &SourcePlan,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("pipelines.{name}.{k}");
    check_name(&format!("pipelines.{name}"), name, true)?;
    let sample = |t: &str| render_table(t, "topic");
    check_name(&key("table"), &sample(&p.table), true)?;
    check_name(&key("dead_letter_table"), &sample(dead_letter_table), true)?;
    let per_topic = p.table.contains(TOPIC);
    if per_topic && !source.is_multi_topic() {
        return Err(ConfigError::key(
            key("table"),
            format!(
                "{{topic}} needs a source with several topics: set sources.{}.topics \
                 or topic_pattern",
                p.source
            ),
        ));
    }
    if dead_letter_table.contains(TOPIC) != per_topic {
        return Err(ConfigError::key(
            key("dead_letter_table"),
            "name {topic} in both table and dead_letter_table, or in neither",
        ));
    }
    if source.is_multi_topic() && p.sql.is_some() && !per_topic {
        return Err(ConfigError::key(
            key("table"),
            "a query keeps its state per table: name the topic in it (\"name_{topic}\") \
             so each topic has its own",
        ));
    }
    if dead_letter_table == p.table {
        return Err(ConfigError::key(
            key("dead_letter_table"),
            "must differ from the output table",
        ));
    }
    Ok(())
}

/// The mode with the settings that belong to it: SQL, keys, delete predicate, watermark.
fn mode(name: &str, p: &PipelineConfig, source: &SourcePlan) -> Result<Mode, ConfigError> {
    let key = |k: &str| format!("pipelines.{name}.{k}");
    let fields = &source.decoder.fields;
    check_upsert(name, p, source)?;
    if p.sql.is_none() && !matches!(p.mode, OutputMode::Append | OutputMode::Upsert) {
        return Err(ConfigError::key(
            key("mode"),
            format!(
                "'{}' needs an aggregate query: set pipelines.{name}.sql",
                p.mode.name()
            ),
        ));
    }
    if p.sql.as_ref().is_some_and(|sql| sql.trim().is_empty()) {
        return Err(ConfigError::key(key("sql"), "must name a SQL file"));
    }
    if p.mode == OutputMode::Update && p.keys.is_empty() {
        return Err(ConfigError::key(
            key("keys"),
            "update mode MERGEs by key: list the query's GROUP BY columns",
        ));
    }
    for k in &p.keys {
        check_name(&key("keys"), k, true)?;
    }
    let watermark = watermark(name, p, fields)?;
    if p.idle_timeout.is_zero() {
        return Err(ConfigError::key(key("idle_timeout"), "must be positive"));
    }
    Ok(match (&p.sql, p.mode) {
        (None, OutputMode::Upsert) => Mode::Upsert {
            keys: p.keys.clone(),
            delete_when: match (&p.delete_when, source.decoder.format) {
                (Some(sql), _) => Some(sql.clone()),
                (None, SourceFormat::DebeziumJson) => Some("cdc_op = 'd'".into()),
                (None, _) => None,
            },
        },
        (None, _) => Mode::Append,
        (Some(sql_file), output) => Mode::Query(QuerySpec {
            sql_file: sql_file.clone(),
            output,
            keys: p.keys.clone(),
            watermark,
            idle_timeout: p.idle_timeout,
        }),
    })
}

/// Upsert mode's settings: keys that are fields, no SQL, declared fields; elsewhere no
/// delete predicate.
fn check_upsert(name: &str, p: &PipelineConfig, source: &SourcePlan) -> Result<(), ConfigError> {
    let key = |k: &str| format!("pipelines.{name}.{k}");
    if p.mode != OutputMode::Upsert {
        if p.delete_when.is_some() {
            return Err(ConfigError::key(
                key("delete_when"),
                "only upsert mode deletes: set mode = \"upsert\" and keys",
            ));
        }
        return Ok(());
    }
    let fields = &source.decoder.fields;
    if source.decoder.add_columns {
        return Err(ConfigError::key(
            format!("sources.{}.schema_evolution", p.source),
            format!(
                "not supported with upsert pipelines yet (pipelines.{name}): \
                 declare the fields"
            ),
        ));
    }
    if p.sql.is_some() {
        return Err(ConfigError::key(
            key("sql"),
            "upsert mode applies the source's records as they are: remove sql \
             (aggregates use update mode)",
        ));
    }
    if p.keys.is_empty() {
        return Err(ConfigError::key(
            key("keys"),
            "upsert mode MERGEs by key: list the columns that identify a record",
        ));
    }
    if let Some(k) = p
        .keys
        .iter()
        .find(|k| !fields.is_empty() && !fields.iter().any(|f| &f.name == *k))
    {
        return Err(ConfigError::key(
            key("keys"),
            format!("'{k}' is not a field of source '{}'", p.source),
        ));
    }
    Ok(())
}

/// The event-time column (a TIMESTAMP field) and the watermark delay: both or neither.
fn watermark(
    name: &str,
    p: &PipelineConfig,
    fields: &[FieldSpec],
) -> Result<Option<(String, Duration)>, ConfigError> {
    let key = |k: &str| format!("pipelines.{name}.{k}");
    match (&p.event_time, p.watermark) {
        (Some(column), Some(delay)) => {
            let field = fields.iter().find(|f| &f.name == column);
            // No fields: a registry format, its columns known once the registry answers.
            if !fields.is_empty() && !field.is_some_and(|f| f.ty.is_timestamp()) {
                return Err(ConfigError::key(
                    key("event_time"),
                    format!(
                        "'{column}' is not a TIMESTAMP field of source '{}'",
                        p.source
                    ),
                ));
            }
            Ok(Some((column.clone(), delay)))
        }
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::key(
            key("watermark"),
            "event_time is set: also set the watermark delay, e.g. \"1h\"",
        )),
        (None, Some(_)) => Err(ConfigError::key(
            key("event_time"),
            "a watermark needs the event-time column it is measured on",
        )),
    }
}

/// `partition_by` parsed once: each partition column's name, and how it is computed
/// from the record when it is (`date(...)`).
fn partitions(
    name: &str,
    p: &PipelineConfig,
) -> Result<Vec<(String, Option<Derived>)>, ConfigError> {
    p.partition_by
        .iter()
        .map(|entry| match Derived::parse(entry) {
            Some(Ok(d)) => Ok((d.name.clone(), Some(d))),
            Some(Err(m)) => Err(ConfigError::key(
                format!("pipelines.{name}.partition_by"),
                m,
            )),
            None => Ok((entry.clone(), None)),
        })
        .collect()
}

/// Columns named by a pipeline without SQL: fields of its source, partition columns of
/// the right kind (`date()` of a NOT NULL TIMESTAMP).
fn check_columns(
    name: &str,
    p: &PipelineConfig,
    fields: &[FieldSpec],
    partitions: &[(String, Option<Derived>)],
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("pipelines.{name}.{k}");
    let not_a_field = |k: &str, what: &str| {
        ConfigError::key(
            key(k),
            format!("'{what}' is not a field of source '{}'", p.source),
        )
    };
    if let Some(column) = p
        .no_dictionary_columns
        .iter()
        .find(|c| !fields.iter().any(|f| &f.name == *c))
    {
        return Err(not_a_field("no_dictionary_columns", column));
    }
    for (column, derived) in partitions {
        let Some(d) = derived else {
            let field = fields
                .iter()
                .find(|f| &f.name == column)
                .ok_or_else(|| not_a_field("partition_by", column))?;
            if !matches!(
                field.ty,
                FieldType::Date | FieldType::String | FieldType::Int32 | FieldType::Int64
            ) || !field.required
            {
                return Err(ConfigError::key(
                    key("partition_by"),
                    format!("'{column}' must be a NOT NULL date, string or integer field"),
                ));
            }
            continue;
        };
        let from = fields.iter().find(|f| f.name == d.from);
        if !from.is_some_and(|f| f.ty.is_timestamp() && f.required) {
            return Err(ConfigError::key(
                key("partition_by"),
                format!(
                    "date() takes a NOT NULL TIMESTAMP field of source '{}'; '{}' is not one",
                    p.source, d.from
                ),
            ));
        }
        if fields.iter().any(|f| f.name == d.name) || METADATA_COLUMNS.contains(&d.name.as_str()) {
            return Err(ConfigError::key(
                key("partition_by"),
                format!(
                    "'{}' is already a column: name it (\"day = date({})\")",
                    d.name, d.from
                ),
            ));
        }
    }
    Ok(())
}
