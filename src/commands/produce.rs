//! `lakestream produce`: the demo's replay of the SF calls file (or synthetic calls)
//! into a topic.

use std::io::IsTerminal;

use chrono::NaiveDateTime;

use crate::cli::{ProduceArgs, ProduceFormat};
use crate::config::{ConfigError, Plan, SourceFormat};
use crate::decode::{JsonDecoder, RegistryClient};
use crate::demo::dataset::{Dataset, DatasetOptions};
use crate::demo::synthetic::CallGenerator;
use crate::demo::{produce as send_all, AvroFramer, ProduceOptions, ProduceReport, Rate};
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
    let framer = match args.format {
        ProduceFormat::Json => None,
        ProduceFormat::Avro => Some(avro_framer(config, &args, &topic).await?),
    };
    let connection = Connection::new(&config.kafka)?.checked().await?;
    ensure_topic(&connection, &topic, args.partitions).await?;
    let opts = ProduceOptions {
        connection,
        topic: topic.clone(),
        rate: Rate(args.rate),
        compression: args.compression.clone(),
        progress: !args.no_progress && std::io::stderr().is_terminal(),
    };
    let report = tokio::task::spawn_blocking(move || produce_blocking(&opts, &args, framer))
        .await
        .map_err(|e| Error::Task {
            task: "produce".into(),
            cause: e,
        })??;
    Ok((topic, report))
}

/// The Avro framer of `--format avro`: the declared fields of the source (`--source`,
/// or the first JSON one) as a schema registered under `<topic>-value`.
async fn avro_framer(config: &Plan, args: &ProduceArgs, topic: &str) -> Result<AvroFramer> {
    let registry = config.registry.as_ref().ok_or_else(|| {
        ConfigError::key(
            "schema_registry",
            "--format avro registers its schema there: add [schema_registry] url = ...",
        )
    })?;
    let source = match &args.source {
        Some(name) => config.sources.get(name),
        None => config
            .sources
            .values()
            .find(|s| s.decoder.format == SourceFormat::Json && !s.decoder.fields.is_empty()),
    };
    let source = source
        .filter(|s| !s.decoder.fields.is_empty())
        .ok_or_else(|| {
            bad_arg(
                "--source",
                "--format avro types the calls by a source's declared fields: name a JSON \
                 source with fields",
            )
        })?;
    let client = RegistryClient::new(registry)?;
    let subject = format!("{topic}-value");
    let framer =
        AvroFramer::register(JsonDecoder::for_source(&source.decoder), &client, &subject).await?;
    eprintln!(
        "Avro schema of source '{}' registered under {subject} (id {})",
        source.name, framer.id
    );
    Ok(framer)
}

/// `records` framed as Avro, a chunk at a time (the JSON decoder works on batches).
fn framed<I>(
    records: I,
    mut framer: AvroFramer,
) -> impl Iterator<Item = std::io::Result<(Option<String>, Vec<u8>)>>
where
    I: Iterator<Item = std::io::Result<(Option<String>, Vec<u8>)>>,
{
    let mut records = records;
    std::iter::from_fn(move || {
        let chunk: std::io::Result<Vec<_>> = records.by_ref().take(4096).collect();
        match chunk {
            Ok(chunk) if chunk.is_empty() => None,
            Ok(chunk) => Some(match framer.frame(chunk) {
                Ok(frames) => frames.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(std::io::Error::other(e))],
            }),
            Err(e) => Some(vec![Err(e)]),
        }
    })
    .flatten()
}

fn send<I>(
    opts: &ProduceOptions,
    total: u64,
    records: I,
    framer: Option<AvroFramer>,
) -> Result<ProduceReport>
where
    I: Iterator<Item = std::io::Result<(Option<String>, Vec<u8>)>>,
{
    Ok(match framer {
        Some(framer) => send_all(opts, total, framed(records, framer))?,
        None => send_all(opts, total, records)?,
    })
}

fn produce_blocking(
    opts: &ProduceOptions,
    args: &ProduceArgs,
    framer: Option<AvroFramer>,
) -> Result<ProduceReport> {
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
        return send(opts, n, records, framer);
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
    send(opts, total, records, framer)
}

fn bad_arg(option: &str, message: &str) -> Error {
    Error::Usage {
        option: option.to_string(),
        message: message.to_string(),
    }
}
