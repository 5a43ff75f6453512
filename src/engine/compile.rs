//! Start-up checks of a pipeline's SQL: read, plan, check the output against the mode
//! and keys, and run it once on a sample batch, so a wrong query fails before any record
//! is read, naming the file and line.

use super::*;

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
        engine.check(p, &query.keys, &path)?;
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

    /// Mode, keys and partition columns must fit what the query computes.
    fn check(&self, p: &PipelinePlan, keys: &[String], file: &str) -> Result<(), EngineError> {
        let pipeline = &p.name;
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
            (Shape::Aggregate { .. }, OutputMode::Upsert) => {
                return Err(bad(
                    "upsert mode applies records, not a query: use update mode for an aggregate"
                        .to_string(),
                ))
            }
        }
        match &self.shape {
            Shape::Aggregate { keys: grouped, .. } if !keys.is_empty() => {
                let mut want = keys.to_vec();
                let mut have = grouped.clone();
                want.sort();
                have.sort();
                if want != have {
                    return Err(bad(format!(
                        "pipelines.{pipeline}.keys is {keys:?} but the query groups by {grouped:?}"
                    )));
                }
            }
            _ => {
                if let Some(k) = keys.iter().find(|k| !names.contains(&k.as_str())) {
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
