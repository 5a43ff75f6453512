//! Commits of stateful pipelines: the query runs over the new part of the batch with
//! the state the table names, and the output (appended, MERGEd or replacing the whole
//! result) is committed with the next state snapshot's name in one commit.

use super::*;

impl DeltaSink {
    /// The state as of the table's latest commit by this pipeline. A table whose
    /// pipeline committed batches but whose state cannot be found is an error: starting
    /// from empty state would silently corrupt every aggregate.
    pub async fn stream_state(&mut self, engine: &Engine) -> Result<StreamState, SinkError> {
        if self.stream_checked {
            if let Some((_, s)) = &self.stream {
                return Ok(s.clone());
            }
        }
        let err = |e| SinkError::delta(&self.name, e);
        let batch = self.txn_version(self.batch_app_id()).await.map_err(err)?;
        let token = self
            .txn_version(state::state_app_id(&self.opts.pipeline))
            .await
            .map_err(err)?;
        let named = batch
            .zip(token)
            .map(|(batch_id, token)| StateRef { batch_id, token });
        let current = match self.stream.take() {
            Some((r, s)) if r == named && (named.is_some() || batch.is_none()) => s,
            _ if batch.is_none() || !engine.keeps_state() => engine.empty_state(),
            _ => {
                let schema = engine.output_schema();
                let loaded = match named {
                    Some(r) => {
                        state::load(
                            &self.table,
                            &self.opts.pipeline,
                            r,
                            &schema,
                            engine.empty_state(),
                        )
                        .await
                    }
                    None => {
                        state::load_legacy(
                            &self.table,
                            &self.opts.pipeline,
                            &schema,
                            engine.empty_state(),
                        )
                        .await
                    }
                }
                .map_err(err)?;
                let Some(s) = loaded else {
                    return Err(self.state_missing(batch, named));
                };
                StreamState {
                    clock: s.clock.restarted(Instant::now()),
                    ..s
                }
            }
        };
        self.stream = Some((named, current.clone()));
        self.stream_checked = true;
        Ok(current)
    }

    fn state_missing(&self, batch: Option<i64>, named: Option<StateRef>) -> SinkError {
        let pipeline = &self.opts.pipeline;
        let why = match named {
            Some(r) => format!(
                "its snapshot {} is missing from the table's folder",
                state::path(pipeline, r)
            ),
            None => "it was recorded in log entries that have been cleaned up (tables \
                     written before lakestream kept state in checkpointed records)"
                .to_string(),
        };
        SinkError::StateMissing {
            table: self.name.clone(),
            message: format!(
                "pipeline '{pipeline}' committed batches up to {} but its state cannot be \
                 found: {why}. Starting from empty state would make every aggregate wrong. \
                 Restore the snapshot from a backup, or rebuild: delete the table (and its \
                 _lakestream folder) and run the pipeline again from the topic",
                batch.unwrap_or(-1)
            ),
        }
    }

    pub(super) async fn try_stream(
        &mut self,
        rows: &RecordBatch,
        batch: &BatchInfo,
        engine: &mut Engine,
    ) -> Result<CommitOutcome, AttemptError> {
        let part = self.new_part(batch).await?;
        let Some(new_ranges) = part.ranges.clone() else {
            return Ok(CommitOutcome::AlreadyCommitted);
        };
        let (committed, record) = (&part.committed, &part.record);
        let input = rows_beyond(rows, batch, &new_ranges, committed)?;
        let t = Instant::now();
        let current = self
            .stream_state(engine)
            .await
            .map_err(AttemptError::Fatal)?;
        let step = engine
            .process(&input, &current)
            .await
            .map_err(AttemptError::Engine)?;
        self.timings.query_ms += ms_since(t);
        let batch_id = self.next_batch_id().await?;
        let t = Instant::now();
        let snapshot = engine.keeps_state().then(|| state::new_ref(batch_id));
        if let Some(r) = snapshot {
            let schema = engine.output_schema();
            state::save(&self.table, &self.opts.pipeline, r, &step.state, &schema).await?;
            crate::failpoint::hit("after_state_write", &self.opts.pipeline);
        }
        self.timings.write_ms += ms_since(t);
        let entry = json!({
            "lateRows": step.late_rows,
            "watermark": step.state.clock.watermark,
            "rows": step.state.aggregate.as_ref().map(|a| a.len()),
            "file": snapshot.map(|r| state::path(&self.opts.pipeline, r).to_string()),
        });
        let emitted = step.emit.rows().num_rows();
        let mut props = self.properties(
            record,
            &new_ranges,
            (Some(batch_id), batch.topic_id),
            emitted,
            Some(("state", entry)),
        );
        if let Some(r) = snapshot {
            props = props.with_application_transaction(Transaction::new(
                state::state_app_id(&self.opts.pipeline),
                r.token,
            ));
        }
        let version = match &step.emit {
            Emit::Append(out) => {
                let adds = self.write(out).await?;
                let actions = adds.into_iter().map(Action::Add).collect();
                self.commit_actions(actions, props, OutputMode::Append, Some(batch_id))
                    .await?
            }
            Emit::Replace(out) => {
                let mut actions: Vec<Action> = self
                    .table
                    .snapshot()?
                    .log_data()
                    .into_iter()
                    .map(|f| Action::Remove(f.remove_action(true)))
                    .collect();
                actions.extend(self.write(out).await?.into_iter().map(Action::Add));
                self.commit_actions(actions, props, OutputMode::Complete, Some(batch_id))
                    .await?
            }
            Emit::Merge(out) if out.num_rows() == 0 => {
                self.commit_actions(Vec::new(), props, OutputMode::Update, Some(batch_id))
                    .await?
            }
            Emit::Merge(out) => self.merge_aggregate(out, engine.shape(), props).await?,
        };
        self.landed(record, batch, Some(batch_id));
        let state_rows = step.state.aggregate.as_ref().map_or(0, |a| a.len());
        let watermark = step.state.clock.watermark;
        self.stream = Some((snapshot, step.state));
        if snapshot.is_some() && batch_id % 16 == 0 {
            state::prune(&self.table, &self.opts.pipeline, batch_id).await;
        }
        Ok(CommitOutcome::Committed {
            version,
            batch_id: Some(batch_id),
            rows: emitted,
            input_rows: input.num_rows(),
            late_rows: step.late_rows,
            state_rows,
            watermark,
        })
    }

    /// MERGE `rows` by the query's keys: matched rows take the new (absolute) values,
    /// new keys are inserted.
    async fn merge_aggregate(
        &mut self,
        rows: &RecordBatch,
        shape: &Shape,
        props: CommitProperties,
    ) -> Result<i64, DeltaTableError> {
        let Shape::Aggregate { keys, values } = shape else {
            return Err(DeltaTableError::Generic(
                "update mode needs an aggregate".into(),
            ));
        };
        let update: Vec<String> = values.iter().map(|(v, _)| v.clone()).collect();
        let insert: Vec<String> = rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let merge = merge::Merge {
            keys,
            delete_when: None,
            update: &update,
            update_when: None,
            insert: &insert,
            insert_when: None,
        };
        self.merge(rows.clone(), merge, props).await
    }
}
