//! The glue behind each CLI command.

mod check;
mod lake;
mod manual;

pub use check::CheckLine;
pub use lake::{checkpoint, compact, history, query, schema, vacuum};
pub use manual::{completions, man_pages};

use std::io::IsTerminal;

use chrono::NaiveDateTime;

use crate::cli::{ProduceArgs, SummaryFormat};
use crate::config::{ConfigError, Plan};
use crate::demo::dataset::{Dataset, DatasetOptions};
use crate::demo::synthetic::CallGenerator;
use crate::demo::{produce as send_all, ProduceOptions, ProduceReport, Rate};
use crate::metrics::Snapshot;
use crate::source::{ensure_topic, Connection};
use crate::sync::SyncTask;
use crate::{Error, Result};

/// How long `sync` may take to finish its pass after a signal.
const SYNC_DRAIN: std::time::Duration = std::time::Duration::from_secs(60);

/// `lakestream sync [--once]`.
pub async fn sync(config: &Plan, once: bool) -> Result<()> {
    let mut task = SyncTask::new(config)
        .filter(SyncTask::has_targets)
        .ok_or_else(|| {
            ConfigError::key(
                "mysql.mirror",
                "nothing to mirror: add a [mysql] section listing pipelines in mirror",
            )
        })?;
    if !once {
        let mut supervisor = crate::supervisor::Supervisor::new(SYNC_DRAIN);
        let stop = supervisor.shutdown().clone();
        supervisor.spawn("mysql sync".into(), async move {
            task.run(stop, None)
                .await
                .map(|()| None)
                .map_err(Error::from)
        });
        return supervisor.finish(None).await.map(|_| ());
    }
    let tables = task.pass().await?;
    for t in &tables {
        println!("{}", serde_json::to_string(t).unwrap_or_default());
    }
    crate::sync::all_mirrored(&tables)?;
    Ok(())
}

/// `lakestream check`: one line per probe as it ends; an error naming the failed ones.
pub async fn check(config: std::sync::Arc<Plan>, json: bool) -> Result<()> {
    let lines = check::check(config, |line| match json {
        true => println!("{}", serde_json::to_string(line).unwrap_or_default()),
        false => println!(
            "{:<4} {:<8} {}",
            if line.ok { "ok" } else { "FAIL" },
            line.part,
            line.detail
        ),
    })
    .await;
    let failed: Vec<&str> = lines.iter().filter(|l| !l.ok).map(|l| l.part).collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::Check {
        failed: failed.len(),
        of: lines.len(),
        parts: failed.join(", "),
    })
}

/// `lakestream produce`.
pub async fn produce(config: &Plan, args: ProduceArgs) -> Result<(String, ProduceReport)> {
    let topic = match (&args.topic, &args.source) {
        (Some(topic), _) => topic.clone(),
        (None, Some(name)) => config
            .sources
            .get(name)
            .map(|s| s.topic().to_string())
            .ok_or_else(|| {
                ConfigError::key(format!("sources.{name}"), "no such source (see --source)")
            })?,
        (None, None) => config
            .sources
            .values()
            .next()
            .map(|s| s.topic().to_string())
            .ok_or_else(|| ConfigError::key("sources", "no source configured; pass --topic"))?,
    };
    if topic.is_empty() {
        return Err(bad_arg(
            "--topic",
            "the source reads several topics (topics or topic_pattern): name one",
        ));
    }
    if args.partitions < 1 {
        return Err(bad_arg("--partitions", "must be at least 1"));
    }
    if args.repeat < 1 {
        return Err(bad_arg("--repeat", "must be at least 1"));
    }
    if args.rate.is_nan() || args.rate < 0.0 {
        return Err(bad_arg("--rate", "must be 0 (unlimited) or positive"));
    }
    let connection = Connection::new(&config.kafka)?.checked().await?;
    ensure_topic(&connection, &topic, args.partitions).await?;
    let opts = ProduceOptions {
        connection,
        topic: topic.clone(),
        rate: Rate(args.rate),
        compression: args.compression.clone(),
        progress: !args.no_progress && std::io::stderr().is_terminal(),
    };
    let report = tokio::task::spawn_blocking(move || produce_blocking(&opts, &args))
        .await
        .map_err(|e| Error::Task {
            task: "produce".into(),
            cause: e,
        })??;
    Ok((topic, report))
}

fn produce_blocking(opts: &ProduceOptions, args: &ProduceArgs) -> Result<ProduceReport> {
    if let Some(n) = args.synthetic {
        let start =
            NaiveDateTime::parse_from_str(&args.start, "%Y-%m-%dT%H:%M:%S").map_err(|e| {
                bad_arg(
                    "--start",
                    &format!("'{}': {e} (want 2018-10-01T00:00:00)", args.start),
                )
            })?;
        if args.mean_gap.is_nan() || args.mean_gap <= 0.0 {
            return Err(bad_arg("--mean-gap", "must be positive"));
        }
        let mut generator = CallGenerator::new(args.seed, start, args.mean_gap);
        let records = (0..n).map(|_| {
            let (key, json) = generator.next_call();
            Ok((Some(key), json))
        });
        return Ok(send_all(opts, n, records)?);
    }
    let path = args
        .file
        .as_ref()
        .ok_or_else(|| bad_arg("--file", "give --file or --synthetic"))?;
    eprintln!("reading {} ...", path.display());
    let dataset = Dataset::load(
        path,
        &DatasetOptions {
            id_field: "crime_id",
            key_field: &args.key,
            time_field: &args.time_field,
            order: args.order,
        },
    )?;
    let per_round = dataset.len();
    let total = (per_round * args.repeat) as u64;
    let records = (0..args.repeat).flat_map(|round| (0..per_round).map(move |i| (round, i)));
    let records = records.map(|(round, i)| dataset.record(round, i));
    Ok(send_all(opts, total, records)?)
}

fn bad_arg(option: &str, message: &str) -> Error {
    Error::Usage {
        option: option.to_string(),
        message: message.to_string(),
    }
}

/// The summary `run` prints on exit.
pub fn print_summary(summaries: &[Snapshot], format: SummaryFormat) {
    for s in summaries {
        match format {
            SummaryFormat::Json => match serde_json::to_string(s) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("cannot print summary: {e}"),
            },
            SummaryFormat::Text => {
                let c = &s.counters;
                println!(
                "pipeline {:<12} table {:<12} version {:>5}  batches {:>6}  records {:>9}  rows {:>9}  dead letters {:>6}  already committed {:>7}  {:>8.0} records/s  {:>6.1} MB/s  ({:.1}s)",
                s.pipeline,
                s.table,
                s.table_version,
                c.batches,
                c.records,
                c.rows,
                c.dead_letters,
                c.skipped,
                s.records_per_second(),
                s.megabytes_per_second(),
                s.seconds
            )
            }
        }
    }
}
