//! Pipelines and lookups.

use std::time::Duration;

use serde::Deserialize;

use super::ParseError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// Every micro-batch appends its new rows; an aggregate appends each window once,
    /// when the watermark passes its end.
    #[default]
    Append,
    /// Every micro-batch MERGEs the aggregate rows it changed (absolute values) by `keys`.
    Update,
    /// Every micro-batch atomically replaces the whole aggregate result.
    Complete,
    /// Change data capture: each record upserts its row by `keys`; a record matching
    /// `delete_when` (a Debezium delete), or a tombstone (null value, keyed by the
    /// message key), deletes it. Within a micro-batch the last event of a key wins.
    Upsert,
}

impl OutputMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Update => "update",
            Self::Complete => "complete",
            Self::Upsert => "upsert",
        }
    }
}

/// A static table loaded from a file (or a Delta table) and reloaded when it changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupConfig {
    /// A `.json` file (an array of objects, or one object per line), a `.csv` file with a
    /// header line, or the folder of a Delta table.
    pub path: String,
    /// `json`, `csv` or `delta`; by default taken from the path's extension (a folder
    /// with a `_delta_log` is `delta`).
    pub format: Option<LookupFormat>,
    /// How often the source is checked for a change (file size and time, Delta version).
    #[serde(default = "defaults::lookup_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupFormat {
    Json,
    Csv,
    Delta,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Name of an entry under `[sources]`.
    pub source: String,
    /// Output Delta table (a folder under `storage.root`).
    pub table: String,
    /// How each micro-batch changes the table.
    #[serde(default)]
    pub mode: OutputMode,
    /// SQL file run over each micro-batch (the source is a table named after the source,
    /// lookups are tables too). Without it, the decoded records are written as they are.
    pub sql: Option<String>,
    /// Columns that identify an output row: required for update mode (the query's GROUP
    /// BY columns, the MERGE keys); elsewhere optional, used as the MySQL mirror's
    /// primary key (default for a table without SQL: kafka_partition, kafka_offset).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Upsert mode: a SQL predicate over the record's columns that makes it a delete
    /// (e.g. `op = 'd'`); default for a debezium-json source: `cdc_op = 'd'`.
    pub delete_when: Option<String>,
    /// Event-time column of the source that drives the watermark.
    pub event_time: Option<String>,
    /// How late an event may arrive: watermark = latest event time seen - this delay.
    #[serde(default, with = "humantime_serde")]
    pub watermark: Option<Duration>,
    /// A partition that delivers nothing for this long stops holding the watermark back.
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Partition columns of the output table.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Register the table in `[catalog]` under this name (`database.table`), when it is
    /// created and whenever its columns change.
    pub catalog_table: Option<String>,
    /// Table that receives records that cannot be decoded; default `<table>_dead_letters`.
    pub dead_letter_table: Option<String>,
    /// Consumer group; default `<kafka.group_id>.<pipeline>`.
    pub group_id: Option<String>,
    /// Columns with near-unique values (ids, exact timestamps) to write without dictionary
    /// encoding; the Kafka offset, key and timestamp columns always are.
    #[serde(default)]
    pub no_dictionary_columns: Vec<String>,
    /// A micro-batch closes this long after its first record arrived.
    #[serde(default = "defaults::trigger_interval", with = "humantime_serde")]
    pub trigger_interval: Duration,
    /// A micro-batch closes once it holds this many records (all partitions together).
    #[serde(default = "defaults::max_offsets_per_trigger")]
    pub max_offsets_per_trigger: usize,
    /// A micro-batch also closes once its payloads and keys reach this many bytes, so
    /// large messages cannot make a batch hold gigabytes.
    #[serde(default = "defaults::max_bytes_per_trigger")]
    pub max_bytes_per_trigger: usize,
    /// How long a failing commit is retried (with backoff) before the pipeline stops.
    #[serde(default = "defaults::commit_retry_timeout", with = "humantime_serde")]
    pub commit_retry_timeout: Duration,
    /// Take over a table whose commits were made under another pipeline name or topic.
    /// Without it such a table refuses to start: offsets are recorded per pipeline and
    /// topic, so a renamed pipeline (or a changed topic) would re-ingest its whole topic
    /// into the table. With it the pipeline starts its own offsets (per
    /// `kafka.starting_offsets`) next to what the table holds.
    #[serde(default)]
    pub adopt: bool,
}

/// Where a pipeline's `table` names the topic it was read from.
pub const TOPIC: &str = "{topic}";

/// `template` with `{topic}` replaced by `topic` made a table-name part: characters other
/// than letters, digits and `_` become `_` (`sf.calls-v2` -> `sf_calls_v2`).
pub fn render_table(template: &str, topic: &str) -> String {
    let part: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    template.replace(TOPIC, &part)
}

mod defaults {
    use std::time::Duration;

    pub(super) fn trigger_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub(super) fn max_offsets_per_trigger() -> usize {
        100_000
    }
    pub(super) fn max_bytes_per_trigger() -> usize {
        256 * 1024 * 1024
    }
    pub(super) fn commit_retry_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub(super) fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub(super) fn lookup_refresh() -> Duration {
        Duration::from_secs(10)
    }
}

/// One derived column: its name and the TIMESTAMP column it is the day of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub name: String,
    pub from: String,
}

impl Derived {
    /// `date(col)` or `name = date(col)`; `None` for a plain column name.
    pub fn parse(entry: &str) -> Option<Result<Self, ParseError>> {
        let (name, expr) = match entry.split_once('=') {
            Some((n, e)) => (Some(n.trim()), e.trim()),
            None => (None, entry.trim()),
        };
        let inner = expr.strip_prefix("date(")?.strip_suffix(')')?.trim();
        let name = name.map_or_else(|| format!("{inner}_date"), str::to_string);
        if !super::is_identifier(&name) || !super::is_identifier(inner) {
            return Some(Err(ParseError(format!(
                "'{entry}': expected date(FIELD) or NAME = date(FIELD)"
            ))));
        }
        Some(Ok(Self {
            name,
            from: inner.to_string(),
        }))
    }
}
