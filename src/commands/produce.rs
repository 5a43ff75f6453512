//! `lakestream produce`: the demo's replay of the SF calls file (or synthetic calls)
//! into a topic.

use std::io::IsTerminal;

use chrono::NaiveDateTime;

use crate::cli::ProduceArgs;
use crate::config::{ConfigError, Plan};
use crate::demo::dataset::{Dataset, DatasetOptions};
use crate::demo::synthetic::CallGenerator;
use crate::demo::{produce as send_all, ProduceOptions, ProduceReport, Rate};
use crate::source::{ensure_topic, Connection};
use crate::{Error, Result};

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
