//! Command-line interface: every option documented here shows in `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::demo::dataset::ReplayOrder;
use crate::query::OutputFormat;

#[derive(Debug, Parser)]
#[command(
    name = "lakestream",
    version,
    about = "Stream JSON events from Kafka into Delta Lake tables, exactly once",
    long_about = "Stream JSON events from Kafka into Delta Lake tables, exactly once.\n\n\
        Every config key can be overridden: `--set section.key=value` on the command line or \
        LAKESTREAM__SECTION__KEY=value in the environment (the command line wins). \
        Example: --set pipelines.calls.max_offsets_per_trigger=50000"
)]
pub struct Cli {
    /// Config file (TOML).
    #[arg(
        long,
        short,
        global = true,
        env = "LAKESTREAM_CONFIG",
        default_value = "config/lakestream.toml"
    )]
    pub config: PathBuf,
    /// Override a config key, e.g. `--set kafka.brokers=host:9092`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    pub set: Vec<String>,
    /// Log filter (tracing syntax: `info`, `lakestream=debug,rdkafka=warn`, ...).
    #[arg(
        long,
        global = true,
        env = "LAKESTREAM_LOG",
        default_value = "info,buoyant_kernel=off,deltalake_core=error"
    )]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parse `args` (the program name first). Every `--set` counts, before and after the
    /// subcommand, in the order given: clap keeps only the subcommand's occurrences of
    /// a global argument given on both sides, so they are read from `args` again.
    pub fn parse_args<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let mut cli = Self::parse_from(&args);
        let mut sets = Vec::new();
        let mut words = args.iter().skip(1).map(|a| a.to_string_lossy());
        while let Some(word) = words.next() {
            match word.as_ref() {
                "--" => break,
                "--set" => sets.extend(words.next().map(|v| v.into_owned())),
                w => sets.extend(w.strip_prefix("--set=").map(str::to_string)),
            }
        }
        // Only what clap parsed as `--set` values, never another argument's text.
        if cli.set.iter().all(|v| sets.contains(v)) {
            cli.set = sets;
        }
        cli
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipelines until SIGINT/SIGTERM (or until caught up).
    Run(RunArgs),
    /// Write calls to a topic: from a file in the SF dataset format, or synthetic ones.
    Produce(ProduceArgs),
    /// Mirror the tables listed in mysql.mirror into MySQL/MariaDB and apply the BI views
    /// (what `run` does in the background), then keep syncing until SIGINT/SIGTERM.
    Sync(SyncArgs),
    /// Run SQL over the tables (by name), now or as they were at a version or time.
    /// `calls@v12` in the SQL reads one table at a version.
    Query(QueryArgs),
    /// A table's commits, newest first: time, operation, rows and files added and
    /// removed, and the micro-batch (batch id, Kafka offsets) each carried.
    History(HistoryArgs),
    /// A table's columns (name, type, nullable, partition column), now or as they were at
    /// a version or time: what schema evolution added shows here and in `history`.
    Schema(SchemaArgs),
    /// Bin-pack small files (or Z-order) of one table or all, where it pays.
    Compact(CompactArgs),
    /// Delete data files no version within the retention needs (also files a crashed
    /// writer never committed).
    Vacuum(VacuumArgs),
    /// Write a checkpoint of one table or all now, and clean up expired log entries.
    Checkpoint(TableArg),
    /// Check the config and every external part it names, writing nothing anyone
    /// reads: Kafka (connect, authenticate, each topic, its partitions, the group may
    /// read it), the storage (a scratch object written and deleted under
    /// `_lakestream_probe/`, conditional puts on S3), MySQL (the sync account and the
    /// privileges the mirror needs) and each pipeline's SQL (planned against its
    /// source's columns). One line per check with what to do when it fails; exits 1
    /// when any fails.
    Check(CheckArgs),
    /// Benchmark helper: read a topic to its end with the pipelines' client settings,
    /// counting messages and bytes (no group offsets, nothing written). Prints JSON.
    CountTopic(CountTopicArgs),
    /// Print a shell completion script, e.g.
    /// `lakestream completions bash > ~/.local/share/bash-completion/completions/lakestream`.
    Completions(CompletionsArgs),
    /// Write the man pages (lakestream.1 and one page per command) into a folder, e.g.
    /// `lakestream man --out /usr/local/share/man/man1`.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Folder to write the pages into (created when missing).
    #[arg(long, value_name = "DIR", default_value = "man")]
    pub out: PathBuf,
}

/// Which version of the tables to read: `--version N` or `--as-of TIME` (not both);
/// neither: the latest.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct AtArgs {
    /// Read the tables as of this version.
    #[arg(long, value_name = "N")]
    pub version: Option<u64>,
    /// Read the tables as of this time: RFC 3339, 'YYYY-MM-DD HH:MM:SS' (UTC) or a date.
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL, e.g. "SELECT crime_type, sum(calls) FROM crime_type_hourly GROUP BY 1".
    pub sql: String,
    #[command(flatten)]
    pub at: AtArgs,
    /// Output format; default: table on a terminal, CSV otherwise.
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Table name.
    pub table: String,
    /// Newest commits to show.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
    /// Output format; default: table on a terminal, JSON lines otherwise.
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Table name.
    pub table: String,
    #[command(flatten)]
    pub at: AtArgs,
    /// Output format; default: table on a terminal, JSON lines otherwise.
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct TableArg {
    /// Table name; default: every table the pipelines write.
    pub table: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Table name; default: every table the pipelines write.
    pub table: Option<String>,
    /// Z-order by these columns (comma separated) instead of the configured ones.
    #[arg(long, value_delimiter = ',', value_name = "COLUMNS")]
    pub zorder_by: Option<Vec<String>>,
}

#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// Table name; default: every table the pipelines write.
    pub table: Option<String>,
    /// Keep files needed by versions younger than this (default:
    /// maintenance.vacuum.retention), e.g. 7d, 12h.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub retention: Option<std::time::Duration>,
    /// Allow a retention below maintenance.vacuum.min_retention.
    #[arg(long)]
    pub force: bool,
    /// List the files that would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Catch up once (every mirrored table to its latest Delta version) and exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// `text`: one aligned line per check; `json`: one JSON object per check per line
    /// (`part`, `ok`, `detail`).
    #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
    pub format: SummaryFormat,
}

#[derive(Debug, Args)]
pub struct CountTopicArgs {
    /// Topic to read.
    #[arg(long)]
    pub topic: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Stop cleanly once each pipeline's table holds every partition of its topic up to
    /// the end it had when the run started, whichever member of the group read it
    /// (backfills, demos, tests). Partitions a dead member still owns are waited for
    /// until the group hands them over (after its session.timeout.ms); the wait is
    /// logged every 10 s.
    #[arg(long)]
    pub until_caught_up: bool,
    /// With --until-caught-up: exit with an error (status 1, naming the partitions not
    /// caught up) if the tables are not caught up this long after start, e.g. "10m".
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "until_caught_up")]
    pub deadline: Option<std::time::Duration>,
    /// Rewind the pipelines deliberately before starting: every partition goes back to
    /// its first record at or after this time (RFC 3339, e.g. 2024-03-01T00:00:00Z;
    /// Kafka's OffsetsForTimes), and the records from there are ingested again. An
    /// append table gets them a second time; an upsert table is corrected. A pipeline
    /// that keeps aggregate state is refused (it would count them twice). A partition
    /// already before that time stays where it is. Use once (with --pipeline), with the
    /// other members of the group stopped; every start with it rewinds again.
    #[arg(long, value_name = "TIME", value_parser = crate::config::parse_time)]
    pub reset_to: Option<i64>,
    /// Run only these pipelines (repeatable); default: all configured.
    #[arg(long = "pipeline", value_name = "NAME")]
    pub pipelines: Vec<String>,
    /// After the first SIGTERM/SIGINT, how long the pipelines may take to finish their
    /// batches in flight before the process exits anyway (status 130; commits are
    /// atomic, the batch is read again on restart). Keep it below a container
    /// platform's grace period (Kubernetes: terminationGracePeriodSeconds).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "60s")]
    pub drain_timeout: std::time::Duration,
    /// Format of the summary printed on exit.
    #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
    pub summary: SummaryFormat,
    /// Each micro-batch's progress record: a compact log line (text) or one JSON line
    /// on stderr with Spark's StreamingQueryProgress fields (json).
    #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
    pub progress: SummaryFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    /// Aligned lines for people.
    Text,
    /// One JSON object per pipeline per line, for scripts.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProduceFormat {
    Json,
    Avro,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["file", "synthetic"])))]
pub struct ProduceArgs {
    /// Dataset file: one JSON array of objects, or NDJSON; `.bz2` is decompressed while
    /// streaming.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Generate this many realistic synthetic calls instead of reading a file.
    #[arg(long, value_name = "N")]
    pub synthetic: Option<u64>,
    /// Events per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0, value_name = "EVENTS_PER_S")]
    pub rate: f64,
    /// Replay the file K times; each round after the first gets fresh crime_ids.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub repeat: usize,
    /// Field whose value becomes the message key.
    #[arg(long, default_value = "crime_id", value_name = "FIELD")]
    pub key: String,
    /// Topic; default: the topic of `--source`.
    #[arg(long)]
    pub topic: Option<String>,
    /// Config source whose topic to use when `--topic` is not given; default: the first.
    #[arg(long)]
    pub source: Option<String>,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Replay order of a file: by event time (oldest first, like a live feed) or as
    /// stored (the SF file is newest first).
    #[arg(long, value_enum, default_value_t = ReplayOrder::EventTime)]
    pub order: ReplayOrder,
    /// Event-time field used by `--order event-time`.
    #[arg(long, default_value = "call_date_time", value_name = "FIELD")]
    pub time_field: String,
    /// Seed of the synthetic generator (same seed, same calls).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Event time of the first synthetic call (local SF time, no zone).
    #[arg(long, default_value = "2018-10-01T00:00:00", value_name = "DATETIME")]
    pub start: String,
    /// Mean seconds between synthetic calls (39 s is about SF's 2,200 calls a day).
    #[arg(long, default_value_t = 39.0, value_name = "SECONDS")]
    pub mean_gap: f64,
    /// librdkafka compression.type: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Message format: the calls as JSON, or as Avro typed by the source's declared
    /// fields, its schema registered under `<topic>-value` in `[schema_registry]`
    /// (Confluent wire format; an `avro` source reads it).
    #[arg(long, value_enum, default_value_t = ProduceFormat::Json)]
    pub format: ProduceFormat,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_counts_before_and_after_the_subcommand() {
        let cli = Cli::parse_args([
            "lakestream",
            "--set",
            "a=1",
            "--set",
            "b=2",
            "run",
            "--set",
            "c=3",
            "--set=d=4",
        ]);
        assert_eq!(cli.set, ["a=1", "b=2", "c=3", "d=4"]);
        let cli = Cli::parse_args(["lakestream", "--set", "a=1", "run"]);
        assert_eq!(cli.set, ["a=1"]);
        let cli = Cli::parse_args(["lakestream", "run", "--set", "c=3"]);
        assert_eq!(cli.set, ["c=3"]);
    }
}
