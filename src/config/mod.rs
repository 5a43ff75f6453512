//! Configuration: plain serde structs, loaded from TOML, overridden from the command line
//! (`--set section.key=value`) and the environment (`LAKESTREAM__SECTION__KEY`), and
//! validated once at start-up. Every error names the key at fault.

mod fields;
mod load;
mod schedule;
mod validate;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

pub use fields::{arrow_schema as fields_schema, is_identifier, json_schema, FieldSpec, FieldType};
pub use load::{load, load_str};
pub use schedule::{Cron, Schedule};

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Address to listen on; keep it on loopback unless a proxy guards it (port 0: any
    /// free port, printed at start-up).
    #[serde(default = "defaults::http_listen")]
    pub listen: String,
    /// Not ready (`/health` 503) when a pipeline is this many records behind.
    #[serde(default = "defaults::max_ready_lag")]
    pub max_ready_lag: i64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: defaults::http_listen(),
            max_ready_lag: defaults::max_ready_lag(),
        }
    }
}

/// Table upkeep. Compaction and vacuum run on a schedule beside ingestion; checkpoints
/// follow the commit count.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Off: `run` schedules no compaction or vacuum (the commands still work;
    /// checkpoints are still written every `checkpoint_interval` commits).
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Write a checkpoint every this many commits of a table (0: never), so opening a
    /// table reads one Parquet file instead of thousands of JSON entries.
    #[serde(default = "defaults::checkpoint_interval")]
    pub checkpoint_interval: u64,
    /// Log entries older than this (and behind a checkpoint) are removed after a
    /// checkpoint; time travel reaches back this far at most.
    #[serde(default = "defaults::log_retention", with = "humantime_serde")]
    pub log_retention: Duration,
    #[serde(default)]
    pub compact: CompactConfig,
    #[serde(default)]
    pub vacuum: VacuumConfig,
    /// Per-table overrides, by table name.
    #[serde(default)]
    pub tables: BTreeMap<String, TableMaintenance>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactConfig {
    /// When to compact every table: an interval ("10m"), a cron expression in UTC
    /// ("0 3 * * *") or "off".
    #[serde(default = "defaults::compact_schedule")]
    pub schedule: Schedule,
    /// Files are bin-packed up to this size; default `storage.target_file_size`.
    pub target_file_size: Option<u64>,
    /// A partition is rewritten only once it holds this many files below the target
    /// size: compaction must pay for the rewrite.
    #[serde(default = "defaults::min_small_files")]
    pub min_small_files: usize,
    /// A compaction that conflicts with a concurrent commit is retried from a fresh
    /// snapshot this many times.
    #[serde(default = "defaults::maintenance_retries")]
    pub max_retries: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VacuumConfig {
    #[serde(default = "defaults::vacuum_schedule")]
    pub schedule: Schedule,
    /// Unreferenced files older than this are deleted; time travel to versions whose
    /// files were deleted fails.
    #[serde(default = "defaults::vacuum_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// A retention below this is refused unless `--force`: in-flight writers and
    /// long-running readers need their files.
    #[serde(default = "defaults::vacuum_min_retention", with = "humantime_serde")]
    pub min_retention: Duration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableMaintenance {
    /// Overrides `maintenance.compact.schedule` for this table.
    pub compact: Option<Schedule>,
    /// Overrides `maintenance.vacuum.schedule` for this table.
    pub vacuum: Option<Schedule>,
    /// Z-order the table by these columns when compacting (rewrites whole partitions).
    #[serde(default)]
    pub zorder_by: Vec<String>,
}

/// Where the mirror lives and what it holds. Passwords never come from this file: they
/// are read from the environment variable or file named here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// Off: `run` starts no sync task (`lakestream sync` still works).
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    #[serde(default = "defaults::mysql_host")]
    pub host: String,
    #[serde(default = "defaults::mysql_port")]
    pub port: u16,
    #[serde(default = "defaults::mysql_user")]
    pub user: String,
    /// Environment variable holding the sync user's password (unset: empty password).
    #[serde(default = "defaults::mysql_password_env")]
    pub password_env: String,
    /// A file holding the password (first line), instead of the environment variable.
    pub password_file: Option<String>,
    /// Database of the mirrored tables and views; created when missing.
    #[serde(default = "defaults::mysql_database")]
    pub database: String,
    /// Pipelines whose output tables are mirrored (same table names in MySQL).
    #[serde(default)]
    pub mirror: Vec<String>,
    /// How often the sync task looks for new Delta versions.
    #[serde(default = "defaults::sync_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Rows per INSERT statement.
    #[serde(default = "defaults::sync_batch_rows")]
    pub batch_rows: usize,
    /// Folder of the BI layer's SQL files, applied in name order at start-up.
    #[serde(default = "defaults::mysql_sql_dir")]
    pub sql_dir: String,
    /// Read-only account for dashboards: SELECT on the views only. Unset: not managed.
    pub bi_user: Option<String>,
    /// Environment variable holding the BI account's password.
    #[serde(default = "defaults::bi_password_env")]
    pub bi_password_env: String,
    /// Host part of the BI account (`%` = from anywhere).
    #[serde(default = "defaults::bi_host")]
    pub bi_host: String,
    /// `required`: connect over TLS only, verifying the server's certificate (against
    /// `tls_ca_file` when set, else the public web PKI roots) and host name. `off`:
    /// plain TCP.
    #[serde(default)]
    pub tls: MysqlTls,
    /// PEM file of the CA that signed the server's certificate (a private CA or a
    /// self-signed server certificate).
    pub tls_ca_file: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MysqlTls {
    #[default]
    Off,
    Required,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated (`host:port,host:port`).
    #[serde(default = "defaults::brokers")]
    pub brokers: String,
    /// Consumer group prefix; each pipeline consumes as group `<group_id>.<pipeline>`
    /// unless the pipeline sets its own `group_id`.
    #[serde(default = "defaults::group_id")]
    pub group_id: String,
    /// Where a pipeline starts on a partition its table has never seen.
    #[serde(default)]
    pub starting_offsets: StartingOffsets,
    /// Position a partition this many records before the offset to resume from; the
    /// records in between are skipped by the consumer. 0 is right for Kafka and Redpanda.
    /// tansu 0.6 answers a fetch from the middle of a record batch with the *next*
    /// batch, silently skipping the rest of the first; a rewind at least as large as a
    /// producer batch (librdkafka: batch.num.messages, default 10000) avoids that.
    #[serde(default)]
    pub seek_rewind: u32,
    /// Stop a pipeline when records it has not ingested can no longer be read: its
    /// table's resume offset is below the partition's first retained record (retention
    /// deleted them), beyond its end (topic deleted and recreated), or a partition skips
    /// offsets that retention removed while it was being read (Spark's `failOnDataLoss`).
    /// With `false` the pipeline logs and counts each case and goes on from the
    /// earliest record still there.
    #[serde(default = "defaults::yes")]
    pub fail_on_data_loss: bool,
    /// Extra librdkafka properties passed through as they are (e.g. `"fetch.wait.max.ms" = "5"`).
    #[serde(default = "defaults::kafka_options")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartingOffsets {
    /// Read the partition from its first retained record (Spark's `earliest`).
    #[default]
    Earliest,
    /// Skip what is already in the partition.
    Latest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Root under which each table is a folder: a local path (relative to the working
    /// directory) or a URL such as `file:///data/lake`.
    #[serde(default = "defaults::root")]
    pub root: String,
    /// zstd level for data files (1 = fastest, 22 = smallest).
    #[serde(default = "defaults::zstd_level")]
    pub zstd_level: i32,
    /// A data file is closed and a new one started past this many bytes.
    #[serde(default = "defaults::target_file_size")]
    pub target_file_size: u64,
    /// Object store options passed to delta-rs (credentials, endpoints).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Kafka topic to read.
    pub topic: String,
    /// Declared message schema, one `"name TYPE [NOT NULL]"` entry per field. Types:
    /// string, int32, int64, double, boolean, date, timestamp. Fields not declared are ignored.
    pub fields: Vec<String>,
    /// Messages larger than this go to the dead-letter table.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
}

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
}

impl OutputMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Update => "update",
            Self::Complete => "complete",
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

    /// The consumer group a pipeline reads with.
    pub fn group_id(&self, pipeline: &str) -> String {
        self.pipelines
            .get(pipeline)
            .and_then(|p| p.group_id.clone())
            .unwrap_or_else(|| format!("{}.{pipeline}", self.kafka.group_id))
    }
}

impl PipelineConfig {
    /// Event-time column and watermark delay, when both are set.
    pub fn watermark_spec(&self) -> Option<(&str, Duration)> {
        Some((self.event_time.as_deref()?, self.watermark?))
    }

    /// Columns identifying an output row (see `keys`).
    pub fn row_keys(&self) -> Vec<String> {
        match (&self.sql, self.keys.is_empty()) {
            (None, true) => vec!["kafka_partition".into(), "kafka_offset".into()],
            _ => self.keys.clone(),
        }
    }

    /// Columns written without dictionary encoding: the configured ones and the Kafka
    /// metadata columns that are near-unique.
    pub fn no_dictionary(&self) -> Vec<String> {
        const NEAR_UNIQUE_METADATA: [&str; 3] = ["kafka_offset", "kafka_key", "kafka_timestamp"];
        self.no_dictionary_columns
            .iter()
            .map(String::as_str)
            .chain(NEAR_UNIQUE_METADATA)
            .map(String::from)
            .collect()
    }

    pub fn dead_letter_table(&self) -> String {
        self.dead_letter_table
            .clone()
            .unwrap_or_else(|| format!("{}_dead_letters", self.table))
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: defaults::brokers(),
            group_id: defaults::group_id(),
            starting_offsets: StartingOffsets::default(),
            seek_rewind: 0,
            fail_on_data_loss: true,
            options: defaults::kafka_options(),
        }
    }
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            checkpoint_interval: defaults::checkpoint_interval(),
            log_retention: defaults::log_retention(),
            compact: CompactConfig::default(),
            vacuum: VacuumConfig::default(),
            tables: BTreeMap::new(),
        }
    }
}

impl Default for CompactConfig {
    fn default() -> Self {
        Self {
            schedule: defaults::compact_schedule(),
            target_file_size: None,
            min_small_files: defaults::min_small_files(),
            max_retries: defaults::maintenance_retries(),
        }
    }
}

impl Default for VacuumConfig {
    fn default() -> Self {
        Self {
            schedule: defaults::vacuum_schedule(),
            retention: defaults::vacuum_retention(),
            min_retention: defaults::vacuum_min_retention(),
        }
    }
}

impl MaintenanceConfig {
    pub fn table(&self, name: &str) -> TableMaintenance {
        self.tables.get(name).cloned().unwrap_or_default()
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            root: defaults::root(),
            zstd_level: defaults::zstd_level(),
            target_file_size: defaults::target_file_size(),
            options: BTreeMap::new(),
        }
    }
}

/// Defaults in one place; the commented default config repeats them for users.
mod defaults {
    use std::collections::BTreeMap;
    use std::time::Duration;

    pub fn brokers() -> String {
        "127.0.0.1:9092".into()
    }
    pub fn group_id() -> String {
        "lakestream".into()
    }
    pub fn kafka_options() -> BTreeMap<String, String> {
        // A broker answers a fetch only when it has data or after this wait; librdkafka's
        // 500 ms default caps a consumer at a few fetches a second on a quiet partition.
        BTreeMap::from([("fetch.wait.max.ms".to_string(), "5".to_string())])
    }
    pub fn root() -> String {
        "tables".into()
    }
    pub fn zstd_level() -> i32 {
        1
    }
    pub fn target_file_size() -> u64 {
        128 * 1024 * 1024
    }
    pub fn max_message_bytes() -> usize {
        1024 * 1024
    }
    pub fn trigger_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn max_offsets_per_trigger() -> usize {
        100_000
    }
    pub fn max_bytes_per_trigger() -> usize {
        256 * 1024 * 1024
    }
    pub fn commit_retry_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn lookup_refresh() -> Duration {
        Duration::from_secs(10)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn http_listen() -> String {
        "127.0.0.1:8321".into()
    }
    pub fn max_ready_lag() -> i64 {
        1_000_000
    }
    pub fn checkpoint_interval() -> u64 {
        100
    }
    pub fn log_retention() -> Duration {
        // As long as vacuum's retention: older versions have usually lost data files by
        // then, and every commit lists the log, so a month of per-second commits costs.
        Duration::from_secs(7 * 24 * 3600)
    }
    pub fn compact_schedule() -> super::Schedule {
        super::Schedule::Every(Duration::from_secs(600))
    }
    pub fn min_small_files() -> usize {
        8
    }
    pub fn maintenance_retries() -> u32 {
        10
    }
    pub fn vacuum_schedule() -> super::Schedule {
        super::Schedule::Every(Duration::from_secs(24 * 3600))
    }
    pub fn vacuum_retention() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    pub fn vacuum_min_retention() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn mysql_host() -> String {
        "127.0.0.1".into()
    }
    pub fn mysql_port() -> u16 {
        3306
    }
    pub fn mysql_user() -> String {
        "root".into()
    }
    pub fn mysql_password_env() -> String {
        "LAKESTREAM_MYSQL_PASSWORD".into()
    }
    pub fn mysql_database() -> String {
        "lakestream".into()
    }
    pub fn sync_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub fn sync_batch_rows() -> usize {
        1000
    }
    pub fn mysql_sql_dir() -> String {
        "sql/mysql".into()
    }
    pub fn bi_password_env() -> String {
        "LAKESTREAM_BI_PASSWORD".into()
    }
    pub fn bi_host() -> String {
        "%".into()
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
