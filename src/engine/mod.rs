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
mod state;
mod window;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deltalake::arrow::array::{new_null_array, ArrayRef, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::compute::{can_cast_types, cast};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::error::ArrowError;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};

pub use changes::{Changes, DELETE};
pub use derive::Derive;
pub use keys::last_per_key;
pub use plan::{Merge, Shape};
pub use state::{Aggregate, Clock};
pub use window::micros;

use crate::config::{LookupPlan, OutputMode, PipelinePlan, QuerySpec};
use lookup::Lookup;
use window::{WindowFunction, WindowInput, WindowSlot};

/// Rows of the synthetic batch a query is tried on at start-up.
const CHECK_ROWS: usize = 10_000;
/// A query slower than this on the check batch fails start-up: it would not keep up.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

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

pub struct Engine {
    pipeline: String,
    sql: String,
    /// Name the batch has in SQL (the source's name).
    stream: String,
    ctx: SessionContext,
    slot: WindowSlot,
    lookups: Vec<Lookup>,
    shape: Shape,
    mode: OutputMode,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    /// Event-time column, delay (µs) and idle timeout.
    watermark: Option<(String, i64, Duration)>,
    partitions: Vec<i32>,
    /// Partitions known to be behind their high watermark: never idle (see `Clock`).
    behind: std::collections::HashSet<i32>,
}

impl Engine {
    pub fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Partitions of the source topic: each holds the watermark back until it delivers
    /// an event or goes idle.
    pub fn set_partitions(&mut self, partitions: Vec<i32>) {
        self.partitions = partitions;
    }

    /// Partitions that have records left to read: a partition that is merely behind
    /// (a backfill, slow commits) must hold the watermark, or its on-time records would
    /// be dropped as late.
    pub fn set_behind(&mut self, behind: std::collections::HashSet<i32>) {
        self.behind = behind;
    }

    /// Whether batches depend on what earlier batches left: an event-time clock or an
    /// open aggregate (the sink then snapshots the state with every commit).
    pub fn keeps_state(&self) -> bool {
        self.watermark.is_some() || matches!(self.shape, Shape::Aggregate { .. })
    }

    /// The initial state of a pipeline whose table has none recorded.
    pub fn empty_state(&self) -> StreamState {
        StreamState {
            clock: Clock::default(),
            aggregate: matches!(self.shape, Shape::Aggregate { .. })
                .then(|| Aggregate::empty(self.output_schema.clone())),
        }
    }

    fn bind(&self, batch: &RecordBatch, watermark: Option<i64>) -> Result<(), DataFusionError> {
        {
            let mut slot = self
                .slot
                .lock()
                .map_err(|_| DataFusionError::Internal("window slot poisoned".into()))?;
            slot.batch = Some(batch.clone());
            slot.watermark = watermark;
            slot.late_rows = 0;
        }
        let table = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]])?;
        self.ctx.deregister_table(self.stream.as_str())?;
        self.ctx
            .register_table(self.stream.as_str(), Arc::new(table))?;
        Ok(())
    }

    /// The query over one batch, as one record batch with the output schema, and the
    /// number of late rows the window functions dropped.
    async fn query(
        &self,
        batch: &RecordBatch,
        watermark: Option<i64>,
    ) -> Result<(RecordBatch, u64), DataFusionError> {
        self.bind(batch, watermark)?;
        let out = self.ctx.sql(&self.sql).await?.collect().await?;
        let late = self
            .slot
            .lock()
            .map(|s| s.late_rows)
            .map_err(|_| DataFusionError::Internal("window slot poisoned".into()))?;
        Ok((state::concat(&self.output_schema, &out)?, late))
    }

    fn run_error(&self, e: impl ToString) -> EngineError {
        EngineError::Run {
            pipeline: self.pipeline.clone(),
            message: e.to_string(),
        }
    }

    /// Process one batch (rows the table does not hold yet) from `state`.
    pub async fn process(
        &mut self,
        input: &RecordBatch,
        state: &StreamState,
    ) -> Result<Step, EngineError> {
        for l in &mut self.lookups {
            l.refresh(&self.ctx).await?;
        }
        // Columns a source added by schema evolution are not the query's: it was planned
        // over the declared ones.
        let projected;
        let input = if input.schema() == self.input_schema {
            input
        } else {
            let indices = self
                .input_schema
                .fields()
                .iter()
                .map(|f| input.schema().index_of(f.name()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.run_error(e))?;
            projected = input.project(&indices).map_err(|e| self.run_error(e))?;
            &projected
        };
        let (partial, late_rows) = self
            .query(input, state.clock.watermark)
            .await
            .map_err(|e| self.run_error(e))?;
        let mut clock = state.clock.clone();
        if let Some((column, delay, idle)) = self.watermark.clone() {
            let batch_max =
                state::max_event_times(input, &column).map_err(|e| self.run_error(e))?;
            for p in batch_max.keys() {
                if !self.partitions.contains(p) {
                    self.partitions.push(*p);
                }
            }
            clock.advance(
                &batch_max,
                &self.partitions,
                &self.behind,
                (delay, idle),
                Instant::now(),
            );
        }
        let Shape::Aggregate { keys, values } = &self.shape else {
            return Ok(Step {
                emit: Emit::Append(partial),
                state: StreamState {
                    clock,
                    aggregate: None,
                },
                late_rows,
            });
        };
        let previous = state
            .aggregate
            .as_ref()
            .map(|a| a.rows.clone())
            .unwrap_or_else(|| RecordBatch::new_empty(self.output_schema.clone()));
        let merged = self
            .merge(&previous, &partial, keys, values)
            .await
            .map_err(|e| self.run_error(e))?;
        let windowed = self.output_schema.column_with_name("window_end").is_some();
        let (emit, open) = match self.mode {
            OutputMode::Append => {
                let (closed, open) =
                    state::split_closed(&merged, clock.watermark).map_err(|e| self.run_error(e))?;
                (Emit::Append(closed), open)
            }
            OutputMode::Update => {
                let changed =
                    state::changed_rows(&merged, &partial, keys).map_err(|e| self.run_error(e))?;
                let open = if windowed {
                    state::split_closed(&merged, clock.watermark)
                        .map_err(|e| self.run_error(e))?
                        .1
                } else {
                    merged
                };
                (Emit::Merge(changed), open)
            }
            OutputMode::Complete => (Emit::Replace(merged.clone()), merged),
            // Refused when the query is compiled: upsert pipelines run no query.
            OutputMode::Upsert => return Err(self.run_error("upsert mode runs no query")),
        };
        Ok(Step {
            emit,
            state: StreamState {
                clock,
                aggregate: Some(Aggregate { rows: open }),
            },
            late_rows,
        })
    }

    /// `previous` and `partial` combined per key with each column's merge rule.
    async fn merge(
        &self,
        previous: &RecordBatch,
        partial: &RecordBatch,
        keys: &[String],
        values: &[(String, Merge)],
    ) -> Result<RecordBatch, DataFusionError> {
        if previous.num_rows() == 0 {
            return Ok(partial.clone());
        }
        if partial.num_rows() == 0 {
            return Ok(previous.clone());
        }
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let schema = self.output_schema.clone();
        ctx.register_table(
            "state",
            Arc::new(MemTable::try_new(
                schema.clone(),
                vec![vec![previous.clone()]],
            )?),
        )?;
        ctx.register_table(
            "batch",
            Arc::new(MemTable::try_new(
                schema.clone(),
                vec![vec![partial.clone()]],
            )?),
        )?;
        let select: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| {
                let name = f.name();
                match values.iter().find(|(v, _)| v == name) {
                    Some((_, m)) => format!("{}(\"{name}\") AS \"{name}\"", m.sql()),
                    None => format!("\"{name}\""),
                }
            })
            .collect();
        let group: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        let sql = format!(
            "SELECT {} FROM (SELECT * FROM state UNION ALL SELECT * FROM batch) GROUP BY {}",
            select.join(", "),
            group.join(", ")
        );
        let out = ctx.sql(&sql).await?.collect().await?;
        Ok(state::concat(&schema, &out)?)
    }
}

/// Types a Delta table stores: view types become their plain forms.
fn storable(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        other => other.clone(),
    }
}

/// `batches` as one batch of `schema` (casting where types differ).
pub fn concat_rows(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    state::concat(schema, batches)
}
