//! Reading the lake: SQL over the configured tables (as of now, a version or a time) and
//! a table's commit history and schema.

mod format;
mod history;
mod sql;
mod travel;

pub use format::{write_batches, OutputFormat};
pub use history::{history, history_batch, schema, HistoryEntry};
pub use travel::{open_at, At};

use chrono::{DateTime, Utc};
use deltalake::arrow::array::RecordBatch;
use deltalake::datafusion::common::TableReference;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTableError;

use crate::config::Plan;
use crate::maintenance::MaintenanceError;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("unknown table '{table}' (known: {known})")]
    UnknownTable { table: String, known: String },
    #[error(
        "table '{table}' has no version {version}: its versions run up to {latest} \
         (see `lakestream history {table}`)"
    )]
    NoSuchVersion {
        table: String,
        version: u64,
        latest: u64,
    },
    #[error(
        "table '{table}': version {version} is no longer in the log (entries before \
         version {oldest} were cleaned up after maintenance.log_retention); the oldest \
         version you can read is {oldest}"
    )]
    LogCleaned {
        table: String,
        version: u64,
        oldest: u64,
    },
    #[error(
        "table '{table}' did not exist yet at {at}: its first readable version ({version}) \
         was committed at {created}"
    )]
    TooEarly {
        table: String,
        at: DateTime<Utc>,
        version: u64,
        created: DateTime<Utc>,
    },
    #[error(
        "table '{table}': version {version} cannot be read: VACUUM deleted {missing} of \
         its data files (maintenance.vacuum.retention); read a version committed after \
         the last VACUUM (see `lakestream history {table}`)"
    )]
    Vacuumed {
        table: String,
        version: u64,
        missing: usize,
    },
    #[error("table '{table}'")]
    Delta {
        table: String,
        #[source]
        cause: Box<DeltaTableError>,
    },
    #[error("query: {0}")]
    Sql(Box<DataFusionError>),
    #[error(transparent)]
    Maintenance(#[from] MaintenanceError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot write the result: {0}")]
    Output(String),
}

impl QueryError {
    fn delta(table: &str, cause: DeltaTableError) -> Self {
        Self::Delta {
            table: table.to_string(),
            cause: Box::new(cause),
        }
    }
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        // A table error raised while planning is ours; keep its message as it is.
        Self::Sql(Box::new(e))
    }
}

/// Run `sql` over the configured tables, each as of `at` unless the SQL names a version
/// itself (`calls@v12`).
pub async fn run_sql(config: &Plan, sql: &str, at: At) -> Result<Vec<RecordBatch>, QueryError> {
    let storage = config.storage.storage.clone();
    let tables = config.tables();
    let sql = sql::quote_versioned_names(sql);
    let ctx = SessionContext::new();
    let state = ctx.state();
    let dialect = &state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(&sql, dialect)?;
    for reference in state.resolve_table_references(&statement)? {
        let name = reference.table();
        let (base, version) = sql::split_versioned(name);
        if reference.schema().is_some() || !config.is_table(base) {
            return Err(QueryError::UnknownTable {
                table: reference.to_string(),
                known: tables.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        let table = open_at(&storage, base, version.map_or(at, At::Version)).await?;
        table
            .update_datafusion_session(&state)
            .map_err(|e| QueryError::delta(base, e))?;
        let provider = table.table_provider().await?;
        ctx.register_table(TableReference::bare(name), provider)?;
    }
    Ok(ctx.sql(&sql).await?.collect().await?)
}

/// Parse `--as-of`: RFC 3339 (`2026-11-21T10:00:00Z`), a date-time without zone (UTC)
/// or a date (its midnight UTC).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, crate::config::ParseError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, f) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    Err(crate::config::ParseError(format!(
        "'{text}' is not a time: use RFC 3339 (2026-11-21T10:00:00Z), \
         'YYYY-MM-DD HH:MM:SS' (UTC) or a date (YYYY-MM-DD)"
    )))
}
