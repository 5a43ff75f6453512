//! The service-wide sections: Kafka, storage, the MySQL mirror, maintenance and HTTP.
//! Each section's defaults are written once, in its `Default` impl (serde fills missing
//! keys from it).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{ParseError, Schedule};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub enabled: bool,
    /// Address to listen on; keep it on loopback unless a proxy guards it (port 0: any
    /// free port, printed at start-up).
    pub listen: String,
    /// Not ready (`/health` 503) when a pipeline is this many records behind.
    pub max_ready_lag: i64,
}

/// Table upkeep. Compaction and vacuum run on a schedule beside ingestion; checkpoints
/// follow the commit count.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Off: `run` schedules no compaction or vacuum (the commands still work;
    /// checkpoints are still written every `checkpoint_interval` commits).
    pub enabled: bool,
    /// Write a checkpoint every this many commits of a table (0: never), so opening a
    /// table reads one Parquet file instead of thousands of JSON entries.
    pub checkpoint_interval: u64,
    /// Log entries older than this (and behind a checkpoint) are removed after a
    /// checkpoint; time travel reaches back this far at most.
    #[serde(with = "humantime_serde")]
    pub log_retention: Duration,
    pub compact: CompactConfig,
    pub vacuum: VacuumConfig,
    /// Per-table overrides, by table name.
    pub tables: BTreeMap<String, TableMaintenance>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactConfig {
    /// When to compact every table: an interval ("10m"), a cron expression in UTC
    /// ("0 3 * * *") or "off".
    pub schedule: Schedule,
    /// Files are bin-packed up to this size; default `storage.target_file_size`.
    pub target_file_size: Option<u64>,
    /// A partition is rewritten only once it holds this many files below the target
    /// size: compaction must pay for the rewrite.
    pub min_small_files: usize,
    /// A compaction that conflicts with a concurrent commit is retried from a fresh
    /// snapshot this many times.
    pub max_retries: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VacuumConfig {
    pub schedule: Schedule,
    /// Unreferenced files older than this are deleted; time travel to versions whose
    /// files were deleted fails.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// A retention below this is refused unless `--force`: in-flight writers and
    /// long-running readers need their files.
    #[serde(with = "humantime_serde")]
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
#[serde(default, deny_unknown_fields)]
pub struct MysqlConfig {
    /// Off: `run` starts no sync task (`lakestream sync` still works).
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Environment variable holding the sync user's password; when it is set it wins
    /// over `password_file`.
    pub password_env: String,
    /// A file holding the password (first line; `~/` is the home folder), read when the
    /// variable is not set (`scripts/mysql-accounts.sh` writes it).
    pub password_file: Option<String>,
    /// Database of the mirrored tables and views; created when missing.
    pub database: String,
    /// Pipelines whose output tables are mirrored (same table names in MySQL).
    pub mirror: Vec<String>,
    /// How often the sync task looks for new Delta versions.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows per INSERT statement.
    pub batch_rows: usize,
    /// Folder of the BI layer's SQL files, applied in name order at start-up.
    pub sql_dir: String,
    /// Read-only account for dashboards: SELECT on the views only. Unset: not managed.
    pub bi_user: Option<String>,
    /// Environment variable holding the BI account's password.
    pub bi_password_env: String,
    /// Host part of the BI account (`%` = from anywhere).
    pub bi_host: String,
    /// `required`: connect over TLS only, verifying the server's certificate (against
    /// `tls_ca_file` when set, else the public web PKI roots) and host name. `off`:
    /// plain TCP.
    pub tls: MysqlTls,
    /// PEM file of the CA that signed the server's certificate (a private CA or a
    /// self-signed server certificate).
    pub tls_ca_file: Option<String>,
    /// Roll-ups the sync keeps of an append table: counts per minute, hour and day.
    pub grains: BTreeMap<String, GrainConfig>,
}

/// Counts of an append table's rows per minute, hour and day (in its source's zone),
/// by some columns: MySQL tables `<name>_minute`, `<name>_hour`, `<name>_day`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrainConfig {
    /// The pipeline whose table is counted (an append table).
    pub from: String,
    /// Its event-time (timestamp) column.
    pub time: String,
    /// The columns counted by (none: one count per period).
    #[serde(default)]
    pub by: Vec<String>,
    /// Name of the count column.
    #[serde(default = "default_count")]
    pub count: String,
}

fn default_count() -> String {
    "count".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MysqlTls {
    #[default]
    Off,
    Required,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated (`host:port,host:port`).
    pub brokers: String,
    /// Consumer group prefix; each pipeline consumes as group `<group_id>.<pipeline>`
    /// unless the pipeline sets its own `group_id`.
    pub group_id: String,
    /// Where a pipeline starts on a partition its table has never seen.
    pub starting_offsets: StartingOffsets,
    /// `read_committed` (default): records of aborted (and still open) transactions are
    /// never read. `read_uncommitted`: everything, as written.
    pub isolation_level: IsolationLevel,
    /// Position a partition this many records before the offset to resume from; the
    /// records in between are skipped by the consumer. 0 is right for Kafka, Redpanda and
    /// the managed services.
    /// tansu 0.6 answers a fetch from the middle of a record batch with the *next*
    /// batch, silently skipping the rest of the first; a rewind at least as large as a
    /// producer batch (librdkafka: batch.num.messages, default 10000) avoids that.
    pub seek_rewind: u32,
    /// Stop a pipeline when records it has not ingested can no longer be read: its
    /// table's resume offset is below the partition's first retained record (retention
    /// deleted them), beyond its end (topic deleted and recreated), or a partition skips
    /// offsets that retention removed while it was being read (Spark's `failOnDataLoss`).
    /// With `false` the pipeline logs and counts each case and goes on from the
    /// earliest record still there.
    pub fail_on_data_loss: bool,
    /// TLS and SASL: how to reach a secured cluster (see `config/lakestream.toml`).
    pub security: super::security::SecurityConfig,
    /// Extra librdkafka properties passed through as they are (e.g. `"fetch.wait.max.ms" = "5"`).
    pub options: BTreeMap<String, String>,
}

/// Where a pipeline starts on a partition its table has never recorded: one position
/// for every partition, or a map by partition number (`"*"`: the others, default
/// earliest). In the file: `"earliest"`, `"latest"`, an RFC 3339 time, an offset, or
/// `{ "0" = 1200, "1" = "latest", "*" = "2024-03-01T00:00:00Z" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct StartingOffsets {
    pub partitions: BTreeMap<i32, Start>,
    pub others: Start,
}

/// One partition's start position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From the first retained record (Spark's `earliest`).
    Earliest,
    /// Skip what is already in the partition.
    Latest,
    /// From this offset.
    Offset(i64),
    /// From the first record whose Kafka timestamp is at or after this time (ms since
    /// the epoch), found with the standard OffsetsForTimes request.
    Time(i64),
}

impl Default for StartingOffsets {
    fn default() -> Self {
        Self::all(Start::Earliest)
    }
}

impl StartingOffsets {
    pub fn all(start: Start) -> Self {
        Self {
            partitions: BTreeMap::new(),
            others: start,
        }
    }

    pub fn for_partition(&self, partition: i32) -> Start {
        self.partitions
            .get(&partition)
            .copied()
            .unwrap_or(self.others)
    }
}

impl Start {
    /// `earliest`, `latest`, an RFC 3339 time or an offset.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        match text.trim() {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            t => match t.parse::<i64>() {
                Ok(offset) if offset >= 0 => Ok(Self::Offset(offset)),
                _ => parse_time(t).map(Self::Time),
            },
        }
    }
}

/// An RFC 3339 time (with a zone or `Z`) as milliseconds since the epoch.
pub fn parse_time(text: &str) -> Result<i64, ParseError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            ParseError(format!(
                "'{text}' is not earliest, latest, an offset or an RFC 3339 time with a zone \
                 (2024-03-01T00:00:00Z): {e}"
            ))
        })
}

impl TryFrom<toml::Value> for Start {
    type Error = ParseError;

    fn try_from(value: toml::Value) -> Result<Self, ParseError> {
        match value {
            toml::Value::String(s) => Self::parse(&s),
            toml::Value::Datetime(d) => Self::parse(&d.to_string()),
            toml::Value::Integer(i) if i >= 0 => Ok(Self::Offset(i)),
            other => Err(ParseError(format!("{other} is not a start position"))),
        }
    }
}

impl TryFrom<toml::Value> for StartingOffsets {
    type Error = ParseError;

    fn try_from(value: toml::Value) -> Result<Self, ParseError> {
        let value = match value {
            // A map given on the command line or in the environment arrives as text.
            toml::Value::String(text) if text.trim_start().starts_with('{') => {
                let mut doc: toml::Table = format!("v = {text}")
                    .parse()
                    .map_err(|e| ParseError(format!("'{text}' is not a TOML inline table: {e}")))?;
                doc.remove("v").unwrap_or(toml::Value::String(text))
            }
            other => other,
        };
        let toml::Value::Table(map) = value else {
            return Start::try_from(value).map(Self::all);
        };
        let mut out = Self::default();
        for (key, value) in map {
            let start =
                Start::try_from(value).map_err(|e| ParseError(format!("partition {key}: {e}")))?;
            if key == "*" {
                out.others = start;
                continue;
            }
            let partition = key.parse::<i32>().ok().filter(|p| *p >= 0).ok_or_else(|| {
                ParseError(format!("'{key}' is not a partition number (or \"*\")"))
            })?;
            out.partitions.insert(partition, start);
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationLevel {
    #[default]
    ReadCommitted,
    ReadUncommitted,
}

impl IsolationLevel {
    /// The librdkafka `isolation.level` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadCommitted => "read_committed",
            Self::ReadUncommitted => "read_uncommitted",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Root under which each table is a folder: a local path (relative to the working
    /// directory) or a URL such as `file:///data/lake`.
    pub root: String,
    /// zstd level for data files (1 = fastest, 22 = smallest).
    pub zstd_level: i32,
    /// A data file is closed and a new one started past this many bytes.
    pub target_file_size: u64,
    /// Object store options passed to delta-rs (credentials, endpoints).
    pub options: BTreeMap<String, String>,
    /// Options whose value is an environment variable's (option -> variable name), so a
    /// secret stays out of the file.
    pub options_env: BTreeMap<String, String>,
    /// Options whose value is a file's content (option -> path), e.g. a mounted secret.
    pub options_file: BTreeMap<String, String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:8321".into(),
            max_ready_lag: 1_000_000,
        }
    }
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            checkpoint_interval: 100,
            // As long as vacuum's retention: older versions have usually lost data files
            // by then, and every commit lists the log, so a month of per-second commits
            // costs.
            log_retention: Duration::from_secs(7 * 24 * 3600),
            compact: CompactConfig::default(),
            vacuum: VacuumConfig::default(),
            tables: BTreeMap::new(),
        }
    }
}

impl Default for CompactConfig {
    fn default() -> Self {
        Self {
            schedule: Schedule::Every(Duration::from_secs(600)),
            target_file_size: None,
            min_small_files: 8,
            max_retries: 10,
        }
    }
}

impl Default for VacuumConfig {
    fn default() -> Self {
        Self {
            schedule: Schedule::Every(Duration::from_secs(24 * 3600)),
            retention: Duration::from_secs(7 * 24 * 3600),
            min_retention: Duration::from_secs(3600),
        }
    }
}

impl Default for MysqlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            host: "127.0.0.1".into(),
            port: 3306,
            user: "lakestream_sync".into(),
            password_env: "LAKESTREAM_MYSQL_PASSWORD".into(),
            password_file: Some("~/.config/lakestream/mysql-sync.password".into()),
            database: "lakestream".into(),
            mirror: Vec::new(),
            interval: Duration::from_secs(2),
            batch_rows: 1000,
            sql_dir: "sql/mysql".into(),
            bi_user: None,
            bi_password_env: "LAKESTREAM_BI_PASSWORD".into(),
            bi_host: "%".into(),
            tls: MysqlTls::Off,
            tls_ca_file: None,
            grains: BTreeMap::new(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "lakestream".into(),
            starting_offsets: StartingOffsets::default(),
            isolation_level: IsolationLevel::default(),
            seek_rewind: 0,
            fail_on_data_loss: true,
            security: super::security::SecurityConfig::default(),
            // Kafka answers a fetch as soon as it has data: librdkafka's defaults suit
            // it. (tansu waits fetch.wait.max.ms on every fetch; see docs/operations.md.)
            options: BTreeMap::new(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            root: "tables".into(),
            zstd_level: 1,
            target_file_size: 128 * 1024 * 1024,
            options: BTreeMap::new(),
            options_env: BTreeMap::new(),
            options_file: BTreeMap::new(),
        }
    }
}
