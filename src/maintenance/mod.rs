//! Table upkeep beside live ingestion: compaction (bin-packing or Z-order), vacuum, and
//! checkpoints with log cleanup; scheduled inside `run` or run as commands.
//!
//! None of it may make an ingestion commit fail or change data: compaction commits only
//! rewrite files (`dataChange: false`, row counts checked), a conflicting one is retried
//! from a fresh snapshot, and ingestion retries its own commit after any concurrent one.

mod checkpoint;
mod compact;
mod options;
mod scheduler;
mod vacuum;

pub use checkpoint::{checkpoint, CheckpointReport};
pub use compact::{compact, CompactOptions, CompactReport};
pub use options::{compact_options, vacuum_options};
pub use scheduler::spawn_schedules;
pub use vacuum::{vacuum, VacuumOptions, VacuumReport};

use std::time::Duration;

use deltalake::{DeltaTable, DeltaTableError};

use crate::config::Plan;
use crate::retry::Backoff;
use crate::retry::{Retry, RetryHint};
use crate::sink::SinkError;
use crate::storage::Storage;

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("table '{table}'")]
    Delta {
        table: String,
        #[source]
        cause: Box<DeltaTableError>,
    },
    #[error("table '{table}': {message}")]
    Refused { table: String, message: String },
    #[error("table '{table}': still conflicting with concurrent commits after {attempts} attempts ({cause}); try again later")]
    GaveUp {
        table: String,
        attempts: u32,
        #[source]
        cause: Box<DeltaTableError>,
    },
    #[error("unknown table '{table}' (known: {known})")]
    UnknownTable { table: String, known: String },
}

impl MaintenanceError {
    fn delta(table: &str, cause: DeltaTableError) -> Self {
        Self::Delta {
            table: table.to_string(),
            cause: Box::new(cause),
        }
    }
}

/// The configured tables named by `selected` (all when None), or which name is unknown.
pub fn select_tables(
    config: &Plan,
    selected: Option<&str>,
) -> Result<Vec<String>, MaintenanceError> {
    let tables = config.tables();
    match selected {
        // Per-topic tables are named one by one (their topics are the broker's to say).
        None => Ok(tables
            .into_keys()
            .filter(|t| !t.contains(crate::config::TOPIC))
            .collect()),
        Some(t) if config.is_table(t) => Ok(vec![t.to_string()]),
        Some(t) => Err(MaintenanceError::UnknownTable {
            table: t.to_string(),
            known: tables.into_keys().collect::<Vec<_>>().join(", "),
        }),
    }
}

/// Run `op` on a freshly opened `name` until it does not lose to a concurrent commit
/// (at most `max_retries` redos); returns its result and the attempts made.
async fn retrying<T, F, Fut>(
    storage: &Storage,
    name: &str,
    max_retries: u32,
    op: F,
) -> Result<(T, u32), MaintenanceError>
where
    F: Fn(DeltaTable) -> Fut,
    Fut: std::future::Future<Output = Result<T, DeltaTableError>>,
{
    let mut attempt = 0;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        attempt += 1;
        let table = storage.open(name).await?;
        match op(table).await {
            Ok(value) => return Ok((value, attempt)),
            Err(e) if e.retry() == Retry::Conflict && attempt <= max_retries => {
                tracing::debug!(table = %name, attempt, error = %crate::report::Report(&e), "lost to a concurrent commit; retrying from a fresh snapshot");
                tokio::time::sleep(backoff.next_wait()).await;
            }
            Err(e) if e.retry() == Retry::Conflict => {
                return Err(MaintenanceError::GaveUp {
                    table: name.to_string(),
                    attempts: attempt,
                    cause: Box::new(e),
                })
            }
            Err(e) => return Err(MaintenanceError::delta(name, e)),
        }
    }
}

/// Live files, their bytes and rows (from file statistics) of the loaded version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableStats {
    pub files: usize,
    pub bytes: u64,
    pub rows: u64,
}

pub fn table_stats(table: &DeltaTable) -> Result<TableStats, DeltaTableError> {
    let mut stats = TableStats::default();
    for file in table.snapshot()?.log_data().iter() {
        stats.files += 1;
        stats.bytes += file.size().max(0) as u64;
        stats.rows += file.num_records().unwrap_or(0) as u64;
    }
    Ok(stats)
}
