//! The streaming SQL engine: runs a pipeline's query over each decoded micro-batch with
//! DataFusion and keeps its result across batches.
//!
//! - The batch is a table named after the source; lookups are tables too; `hop()` and
//!   `tumble()` window it by event time (see `window`).
//! - A query without GROUP BY maps rows (append). An aggregate is maintained: each batch
//!   yields partial aggregates that are merged into the state (see `plan`), and the
//!   output mode decides what is written: `append` writes a window once the watermark
//!   passes its end, `update` MERGEs the changed keys with absolute values, `complete`
//!   rewrites the whole result.
//! - `process` is a pure function of (batch, state): the sink calls it again after a
//!   conflicting commit, from the state that is then current.

mod changes;
mod compile;
mod derive;
mod keys;
mod lookup;
mod plan;
mod sql;
mod state;
mod window;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use deltalake::arrow::error::ArrowError;

pub use changes::{Changes, DELETE};
pub use derive::Derive;
pub use keys::last_per_key;
pub use plan::{Merge, Shape};
pub use sql::Engine;
pub use state::{Aggregate, Clock};
pub use window::micros;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Sql {
        file: String,
        line: Option<u64>,
        message: String,
    },
    #[error("lookup table '{name}': {message}")]
    Lookup { name: String, message: String },
    #[error("pipeline '{pipeline}': {message}")]
    Run { pipeline: String, message: String },
}

/// The state a stateful pipeline carries from batch to batch.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    pub clock: Clock,
    /// Open part of the aggregate (`None` for a query without GROUP BY).
    pub aggregate: Option<Aggregate>,
}

/// What a batch writes to the table.
#[derive(Debug, Clone)]
pub enum Emit {
    /// Add these rows.
    Append(RecordBatch),
    /// Upsert these rows by the pipeline's keys (absolute values).
    Merge(RecordBatch),
    /// Replace the table's content with these rows.
    Replace(RecordBatch),
}

impl Emit {
    pub fn rows(&self) -> &RecordBatch {
        match self {
            Self::Append(r) | Self::Merge(r) | Self::Replace(r) => r,
        }
    }
}

/// The outcome of one batch, installed by the sink once its commit lands.
#[derive(Debug, Clone)]
pub struct Step {
    pub emit: Emit,
    pub state: StreamState,
    /// Rows dropped because every window they belong to had closed.
    pub late_rows: u64,
}

/// Types a Delta table stores: view types become their plain forms, and every timestamp is
/// a UTC instant in microseconds. A zone-less SQL timestamp (`CAST(.. AS TIMESTAMP)`)
/// would otherwise make a `timestamp_ntz` column, which needs the timestampNtz table
/// feature (reader version 3) that Power BI's Direct Lake and older Spark cannot read; its
/// wall-clock value is kept, read as UTC.
fn storable(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        other => other.clone(),
    }
}

/// `batches` as one batch of `schema` (casting where types differ).
pub fn concat_rows(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    state::concat(schema, batches)
}
