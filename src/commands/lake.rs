//! `query`, `history`, `schema`, `compact`, `vacuum` and `checkpoint`: reading and tending the
//! tables from the command line.

use std::io::IsTerminal;

use crate::cli::{CompactArgs, HistoryArgs, QueryArgs, SchemaArgs, TableArg, VacuumArgs};
use crate::config::Plan;
use crate::maintenance::{self, select_tables};
use crate::query::{self, At, OutputFormat};
use crate::{Error, Result};

/// `lakestream query`.
pub async fn query(config: &Plan, args: QueryArgs) -> Result<()> {
    let at = at(&args.at)?;
    let batches = query::run_sql(config, &args.sql, at).await?;
    let format = args.format.unwrap_or(default_format(OutputFormat::Csv));
    Ok(query::write_batches(
        &batches,
        format,
        &mut std::io::stdout().lock(),
    )?)
}

/// `--version` or `--as-of` as a point in a table's history.
fn at(args: &crate::cli::AtArgs) -> Result<At> {
    Ok(match (args.version, args.as_of.as_deref()) {
        (Some(v), _) => At::Version(v),
        (None, Some(t)) => At::Time(query::parse_time(t).map_err(|e| Error::Usage {
            option: "--as-of".into(),
            message: e.to_string(),
        })?),
        (None, None) => At::Latest,
    })
}

/// `lakestream schema`.
pub async fn schema(config: &Plan, args: SchemaArgs) -> Result<()> {
    select_tables(config, Some(&args.table))?;
    let at = at(&args.at)?;
    let batch = query::schema(&config.storage.storage.clone(), &args.table, at).await?;
    let format = args.format.unwrap_or(default_format(OutputFormat::Json));
    Ok(query::write_batches(
        &[batch],
        format,
        &mut std::io::stdout().lock(),
    )?)
}

/// `lakestream history`.
pub async fn history(config: &Plan, args: HistoryArgs) -> Result<()> {
    select_tables(config, Some(&args.table))?;
    let entries = query::history(&config.storage.storage.clone(), &args.table, args.limit).await?;
    let format = args.format.unwrap_or(default_format(OutputFormat::Json));
    let batch = query::history_batch(&entries)?;
    Ok(query::write_batches(
        &[batch],
        format,
        &mut std::io::stdout().lock(),
    )?)
}

/// `lakestream compact`: one JSON line per table.
pub async fn compact(config: &Plan, args: CompactArgs) -> Result<()> {
    let storage = config.storage.storage.clone();
    for table in select_tables(config, args.table.as_deref())? {
        let opts = maintenance::compact_options(config, &table, args.zorder_by.clone());
        eprintln!("compacting {table} ...");
        let report = maintenance::compact(&storage, &table, &opts).await?;
        print_json(&report);
    }
    Ok(())
}

/// `lakestream vacuum`: one JSON line per table (with the file list).
pub async fn vacuum(config: &Plan, args: VacuumArgs) -> Result<()> {
    let storage = config.storage.storage.clone();
    let opts = maintenance::vacuum_options(config, args.retention, args.force, args.dry_run);
    for table in select_tables(config, args.table.as_deref())? {
        eprintln!(
            "vacuuming {table}{} ...",
            if args.dry_run { " (dry run)" } else { "" }
        );
        let report = maintenance::vacuum(&storage, &table, &opts).await?;
        print_json(&report);
    }
    Ok(())
}

/// `lakestream checkpoint`: one JSON line per table.
pub async fn checkpoint(config: &Plan, args: TableArg) -> Result<()> {
    let storage = config.storage.storage.clone();
    for name in select_tables(config, args.table.as_deref())? {
        let table = storage.open(&name).await?;
        let report =
            maintenance::checkpoint(&table, &name, config.maintenance.log_retention).await?;
        print_json(&report);
    }
    Ok(())
}

/// Aligned text on a terminal, `otherwise` for pipes and files.
fn default_format(otherwise: OutputFormat) -> OutputFormat {
    if std::io::stdout().is_terminal() {
        OutputFormat::Table
    } else {
        otherwise
    }
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}
