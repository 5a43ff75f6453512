//! The engine of one pipeline's query: compiled at start-up (read, planned, checked
//! against the mode and keys, tried on a sample batch, so a wrong query fails before any
//! record is read, naming the file and line), then run over each batch with its state.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};

use crate::config::{LookupPlan, OutputMode, PipelinePlan, QuerySpec};

use super::compile::{check_fits, line_in_message, sample_batch};
use super::lookup::Lookup;
use super::plan::{self, Merge, Shape};
use super::state::{self, Aggregate, Clock};
use super::window::micros;
use super::window::{WindowFunction, WindowInput, WindowSlot};
use super::{storable, Emit, EngineError, Step, StreamState};

/// Rows of the synthetic batch a query is tried on at start-up.
const CHECK_ROWS: usize = 10_000;
/// A query slower than this on the check batch fails start-up: it would not keep up.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

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
        p: &PipelinePlan,
        query: &QuerySpec,
        lookups: &BTreeMap<String, LookupPlan>,
        input_schema: SchemaRef,
    ) -> Result<Self, EngineError> {
        let path = query.sql_file.clone();
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
        let mut loaded = Vec::new();
        for (name, lookup) in lookups {
            let mut l = Lookup::new(name, lookup)?;
            l.refresh(&ctx).await?;
            loaded.push(l);
        }
        let mut engine = Self {
            pipeline: p.name.clone(),
            sql,
            stream: p.source.clone(),
            ctx,
            slot,
            lookups: loaded,
            shape: Shape::Rows,
            mode: query.output,
            output_schema: input_schema.clone(),
            input_schema,
            watermark: query
                .watermark
                .as_ref()
                .map(|(c, d)| (c.clone(), micros(*d), query.idle_timeout)),
            partitions: Vec::new(),
            behind: Default::default(),
        };
        engine.plan(&path).await?;
        let watermark = engine.watermark.is_some();
        let shape = (&engine.shape, engine.mode, &engine.output_schema);
        check_fits(shape, watermark, (p, &query.keys), &path)?;
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
        self.shape = plan::analyse(&plan).map_err(|why| EngineError::Sql {
            file: file.to_string(),
            line: None,
            message: why.to_string(),
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
        let input = self.declared_columns(input)?;
        let (partial, late_rows) = self
            .query(&input, state.clock.watermark)
            .await
            .map_err(|e| self.run_error(e))?;
        let mut clock = state.clock.clone();
        self.advance_clock(&input, &mut clock)?;
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
        let (emit, open) = self.emit(merged, &partial, keys, &clock)?;
        Ok(Step {
            emit,
            state: StreamState {
                clock,
                aggregate: Some(Aggregate { rows: open }),
            },
            late_rows,
        })
    }

    /// Columns a source added by schema evolution are not the query's: it was planned
    /// over the declared ones.
    fn declared_columns<'a>(
        &self,
        input: &'a RecordBatch,
    ) -> Result<Cow<'a, RecordBatch>, EngineError> {
        if input.schema() == self.input_schema {
            return Ok(Cow::Borrowed(input));
        }
        let indices = self
            .input_schema
            .fields()
            .iter()
            .map(|f| input.schema().index_of(f.name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.run_error(e))?;
        let projected = input.project(&indices).map_err(|e| self.run_error(e))?;
        Ok(Cow::Owned(projected))
    }

    /// Move the watermark by the batch's event times (partitions first seen join).
    fn advance_clock(&mut self, input: &RecordBatch, clock: &mut Clock) -> Result<(), EngineError> {
        let Some((column, delay, idle)) = self.watermark.clone() else {
            return Ok(());
        };
        let batch_max = state::max_event_times(input, &column).map_err(|e| self.run_error(e))?;
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
        Ok(())
    }

    /// What the output mode writes of the merged aggregate, and the rows kept open.
    fn emit(
        &self,
        merged: RecordBatch,
        partial: &RecordBatch,
        keys: &[String],
        clock: &Clock,
    ) -> Result<(Emit, RecordBatch), EngineError> {
        let windowed = self.output_schema.column_with_name("window_end").is_some();
        Ok(match self.mode {
            OutputMode::Append => {
                let (closed, open) =
                    state::split_closed(&merged, clock.watermark).map_err(|e| self.run_error(e))?;
                (Emit::Append(closed), open)
            }
            OutputMode::Update => {
                let changed =
                    state::changed_rows(&merged, partial, keys).map_err(|e| self.run_error(e))?;
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
