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

mod lookup;
mod plan;
mod state;
mod window;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deltalake::arrow::array::{new_null_array, ArrayRef, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::compute::{can_cast_types, cast};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::error::ArrowError;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};

pub use plan::{Merge, Shape};
pub use state::{Aggregate, Clock};
pub use window::micros;

use crate::config::{Config, OutputMode};
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
    /// Read, plan and try the pipeline's SQL; every problem names the file (and line).
    pub async fn compile(
        config: &Config,
        pipeline: &str,
        input_schema: SchemaRef,
    ) -> Result<Self, EngineError> {
        let p = &config.pipelines[pipeline];
        let path = p.sql.clone().unwrap_or_default();
        let sql = std::fs::read_to_string(&path).map_err(|e| EngineError::Sql {
            file: path.clone(),
            line: None,
            message: format!("cannot read the pipeline's SQL file: {e}"),
        })?;
        let session = SessionConfig::new()
            .set_bool("datafusion.sql_parser.collect_spans", true)
            .with_target_partitions(2);
        let ctx = SessionContext::new_with_config(session);
        let slot: WindowSlot = Arc::new(Mutex::new(WindowInput {
            table: p.source.clone(),
            ..Default::default()
        }));
        for (name, tumbling) in [("hop", false), ("tumble", true)] {
            let f = WindowFunction {
                tumbling,
                slot: slot.clone(),
            };
            ctx.register_udtf(name, Arc::new(f));
        }
        let mut lookups = Vec::new();
        for (name, lookup) in &config.lookups {
            let mut l = Lookup::new(name, lookup)?;
            l.refresh(&ctx).await?;
            lookups.push(l);
        }
        let mut engine = Self {
            pipeline: pipeline.to_string(),
            sql,
            stream: p.source.clone(),
            ctx,
            slot,
            lookups,
            shape: Shape::Rows,
            mode: p.mode,
            output_schema: input_schema.clone(),
            input_schema,
            watermark: p
                .watermark_spec()
                .map(|(c, d)| (c.to_string(), micros(d), p.idle_timeout)),
            partitions: Vec::new(),
            behind: Default::default(),
        };
        engine.plan(&path).await?;
        engine.check(config, pipeline, &path)?;
        engine.try_sample(&path).await?;
        Ok(engine)
    }

    fn sql_error(&self, file: &str, e: &DataFusionError) -> EngineError {
        let line = e
            .diagnostic()
            .and_then(|d| d.span)
            .map(|s| s.start.line)
            .filter(|l| *l > 0)
            .or_else(|| line_in_message(&e.to_string()));
        EngineError::Sql {
            file: file.to_string(),
            line,
            message: e.to_string(),
        }
    }

    /// Plan on an empty batch: the shape of the query and its output schema.
    async fn plan(&mut self, file: &str) -> Result<(), EngineError> {
        let empty = RecordBatch::new_empty(self.input_schema.clone());
        self.bind(&empty, None)
            .map_err(|e| self.sql_error(file, &e))?;
        let plan = self
            .ctx
            .state()
            .create_logical_plan(&self.sql)
            .await
            .map_err(|e| self.sql_error(file, &e))?;
        self.shape = plan::analyse(&plan).map_err(|message| EngineError::Sql {
            file: file.to_string(),
            line: None,
            message,
        })?;
        let fields: Vec<Field> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), storable(f.data_type()), f.is_nullable()))
            .collect();
        self.output_schema = Arc::new(Schema::new(fields));
        Ok(())
    }

    /// Mode, keys and partition columns must fit what the query computes.
    fn check(&self, config: &Config, pipeline: &str, file: &str) -> Result<(), EngineError> {
        let p = &config.pipelines[pipeline];
        let bad = |message: String| EngineError::Sql {
            file: file.to_string(),
            line: None,
            message,
        };
        let names: Vec<&str> = self
            .output_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let has_window_end = names.contains(&"window_end");
        match (&self.shape, self.mode) {
            (Shape::Rows, OutputMode::Append) => {}
            (Shape::Rows, mode) => {
                return Err(bad(format!(
                    "{} mode needs an aggregate query (GROUP BY)",
                    mode.name()
                )))
            }
            (Shape::Aggregate { .. }, OutputMode::Append) => {
                if !has_window_end || self.watermark.is_none() {
                    return Err(bad(format!(
                        "append mode writes each window once, when the watermark passes its \
                         end: select window_end (from hop() or tumble()) and set \
                         pipelines.{pipeline}.event_time and .watermark"
                    )));
                }
            }
            (Shape::Aggregate { .. }, OutputMode::Update | OutputMode::Complete) => {}
        }
        match &self.shape {
            Shape::Aggregate { keys, .. } if !p.keys.is_empty() => {
                let mut want = p.keys.clone();
                let mut have = keys.clone();
                want.sort();
                have.sort();
                if want != have {
                    return Err(bad(format!(
                        "pipelines.{pipeline}.keys is {:?} but the query groups by {:?}",
                        p.keys, keys
                    )));
                }
            }
            _ => {
                if let Some(k) = p.keys.iter().find(|k| !names.contains(&k.as_str())) {
                    return Err(bad(format!(
                        "key '{k}' (pipelines.{pipeline}.keys) is not an output column; \
                         the query returns {names:?}"
                    )));
                }
            }
        }
        for column in p.partition_by.iter().chain(&p.no_dictionary_columns) {
            if !names.contains(&column.as_str()) {
                return Err(bad(format!(
                    "'{column}' (in partition_by or no_dictionary_columns) is not an output \
                     column; the query returns {names:?}"
                )));
            }
        }
        for f in self.output_schema.fields() {
            if !crate::config::is_identifier(f.name()) {
                return Err(bad(format!(
                    "output column '{}' needs a plain name: alias it (AS name)",
                    f.name()
                )));
            }
        }
        Ok(())
    }

    /// Run the query on a synthetic batch under a time limit: a query that cannot keep
    /// up (an accidental cross join, say) fails now rather than stalling the stream.
    async fn try_sample(&mut self, file: &str) -> Result<(), EngineError> {
        let sample =
            sample_batch(&self.input_schema, CHECK_ROWS).map_err(|e| EngineError::Sql {
                file: file.to_string(),
                line: None,
                message: format!("cannot build a test batch: {e}"),
            })?;
        self.bind(&sample, None)
            .map_err(|e| self.sql_error(file, &e))?;
        // On its own thread and runtime: a query that never yields cannot hold up the
        // time limit, nor the process's exit when start-up fails (the thread is left
        // behind and dies with the process).
        let (ctx, sql) = (self.ctx.clone(), self.sql.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("sql-check".into())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| DataFusionError::External(Box::new(e)))
                    .and_then(|rt| rt.block_on(async { ctx.sql(&sql).await?.collect().await }));
                let _ = tx.send(result);
            })
            .map_err(|e| self.run_error(format!("cannot start the query check: {e}")))?;
        let started = Instant::now();
        match tokio::time::timeout(CHECK_TIMEOUT, rx).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => Err(self.sql_error(file, &e)),
            Ok(Err(e)) => Err(self.run_error(format!("query check failed: {e}"))),
            Err(_) => Err(EngineError::Sql {
                file: file.to_string(),
                line: None,
                message: format!(
                    "the query took over {}s on a {CHECK_ROWS}-row test batch (gave up \
                     after {:.1}s); it would not keep up with the stream: check its joins",
                    CHECK_TIMEOUT.as_secs(),
                    started.elapsed().as_secs_f64()
                ),
            }),
        }
    }

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

/// "... at Line: 3, Column: 7" in sqlparser's messages.
fn line_in_message(message: &str) -> Option<u64> {
    let rest = &message[message.find("Line: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `rows` rows of plausible values for `schema`: strings from a small set (so joins and
/// groups behave like real data), numbers and times counting up.
fn sample_batch(schema: &SchemaRef, rows: usize) -> Result<RecordBatch, ArrowError> {
    let counter = Int64Array::from_iter_values((0..rows as i64).map(|i| i * 60_000_000));
    let days =
        deltalake::arrow::array::Int32Array::from_iter_values((0..rows as i32).map(|i| i % 365));
    let columns = schema
        .fields()
        .iter()
        .map(|f| -> Result<ArrayRef, ArrowError> {
            Ok(match f.data_type() {
                DataType::Utf8 => Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("v{}", i % 100)),
                )),
                t @ (DataType::Date32 | DataType::Int32) => cast(&days, t)?,
                t if can_cast_types(&DataType::Int64, t) => cast(&counter, t)?,
                t => new_null_array(t, rows),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// `batches` as one batch of `schema` (casting where types differ).
pub fn concat_rows(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    state::concat(schema, batches)
}
