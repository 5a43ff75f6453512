//! The `lakestream` binary: parse the command line, load the config, run the command.

use std::process::ExitCode;

use anyhow::Context;
use lakestream::cli::{Cli, Command};
use lakestream::pipeline::RunOptions;
use lakestream::{app, commands, config};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// jemalloc returns freed batch memory to the system promptly (see .cargo/config.toml);
/// with glibc's allocator a backfill's RSS stayed ~40% above what it used.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_args(std::env::args_os());
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(lakestream::metrics::ErrorLayer)
        .with(filter)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every message leaves its cause to the chain: `{:#}` prints each once.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(cli: Cli) -> anyhow::Result<()> {
    // These describe the binary, not a deployment: no config is needed.
    match &cli.command {
        Command::Completions(args) => {
            commands::completions(args.shell, &mut std::io::stdout());
            return Ok(());
        }
        Command::Man(args) => {
            let pages = commands::man_pages(&args.out)
                .with_context(|| format!("writing man pages to {}", args.out.display()))?;
            println!("wrote {} man pages to {}", pages.len(), args.out.display());
            return Ok(());
        }
        _ => {}
    }
    let config = config::load(&cli.config, std::env::vars(), &cli.set)
        .with_context(|| format!("loading {}", cli.config.display()))?;
    let config = std::sync::Arc::new(config);
    match cli.command {
        Command::Run(args) => {
            let opts = RunOptions {
                until_caught_up: args.until_caught_up,
                deadline: args.deadline,
                progress_json: args.progress == lakestream::cli::SummaryFormat::Json,
                reset_to: args.reset_to,
                drain_timeout: args.drain_timeout,
            };
            let summaries = app::run(config, &args.pipelines, opts).await?;
            commands::print_summary(&summaries, args.summary);
        }
        Command::Produce(args) => {
            let (topic, report) = commands::produce(&config, args).await?;
            println!(
                "produced {} calls ({:.1} MB) to topic {topic} in {:.1}s: {:.0} calls/s",
                report.sent,
                report.bytes as f64 / 1e6,
                report.elapsed.as_secs_f64(),
                report.per_second()
            );
        }
        Command::Sync(args) => commands::sync(&config, args.once).await?,
        Command::Query(args) => commands::query(&config, args).await?,
        Command::History(args) => commands::history(&config, args).await?,
        Command::Schema(args) => commands::schema(&config, args).await?,
        Command::Compact(args) => commands::compact(&config, args).await?,
        Command::Vacuum(args) => commands::vacuum(&config, args).await?,
        Command::Checkpoint(args) => commands::checkpoint(&config, args).await?,
        Command::Check(args) => {
            let json = args.format == lakestream::cli::SummaryFormat::Json;
            commands::check(config.clone(), json).await?;
        }
        Command::CountTopic(args) => {
            let connection = lakestream::source::Connection::new(&config.kafka)?;
            let report = tokio::task::spawn_blocking(move || {
                connection.check()?;
                lakestream::demo::count_topic(&connection, &args.topic)
            })
            .await??;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Completions(_) | Command::Man(_) => {}
    }
    Ok(())
}
