//! The table's record of where each partition stands, read and written outside the
//! micro-batch commit: on assignment, when a start position must be made durable before
//! anything is read, and the start-up check that the table belongs to this pipeline.

use std::collections::{BTreeMap, HashMap};

use deltalake::kernel::transaction::{CommitBuilder, TableReference};
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::{DeltaTable, DeltaTableError};

use super::entry::{self, CommitEntry};
use super::txn::{batch_app_id, offset_txns, topic_app_id, txn_app_id};
use super::{SinkError, SinkOptions};
use crate::retry::{Backoff, Retry, RetryHint};
use crate::source::Record;

/// How long a position commit outlasts conflicting writers (backing off, jittered)
/// before it gives up.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

async fn open(opts: &SinkOptions, name: &str) -> Result<DeltaTable, SinkError> {
    Ok(opts.storage.open(name).await?)
}

/// What a table records for one partition of its topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// The last offset it holds.
    pub last: Option<i64>,
    /// The id of the topic that offset was read from (`TopicId::fingerprint`); None in
    /// tables written before ids were recorded, or from a broker without them.
    pub topic_id: Option<i64>,
}

async fn versions(
    table: &DeltaTable,
    opts: &SinkOptions,
    partitions: impl Iterator<Item = i32>,
) -> Result<HashMap<i32, Held>, DeltaTableError> {
    let snapshot = table.snapshot()?;
    let log_store = table.log_store();
    let mut out = HashMap::new();
    for p in partitions {
        let read = |app_id| snapshot.transaction_version(log_store.as_ref(), app_id);
        let last = read(txn_app_id(&opts.pipeline, &opts.topic, p)).await?;
        let topic_id = read(topic_app_id(&opts.pipeline, &opts.topic, p)).await?;
        out.insert(p, Held { last, topic_id });
    }
    Ok(out)
}

/// What the table holds for each of `partitions`, read fresh from storage.
pub async fn read_committed(
    opts: &SinkOptions,
    name: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, Held>, SinkError> {
    let table = open(opts, name).await?;
    versions(&table, opts, partitions.iter().copied())
        .await
        .map_err(|e| SinkError::delta(name, e))
}

/// Commit `last` as the offsets the table holds (where `mode` says), stamped with
/// `topic_id`, with no data: a start position or a reset that must survive this
/// process. Two members racing here both end with the first one's positions. Returns
/// the offsets the table then holds.
pub async fn record_offsets(
    opts: &SinkOptions,
    name: &str,
    last: &BTreeMap<i32, i64>,
    mode: Record,
    topic_id: Option<i64>,
) -> Result<BTreeMap<i32, i64>, SinkError> {
    let err = |e| SinkError::delta(name, e);
    let mut table = open(opts, name).await?;
    let started = std::time::Instant::now();
    let mut backoff = Backoff::new(
        std::time::Duration::from_millis(10),
        std::time::Duration::from_secs(2),
    );
    let mut attempts = 0;
    while started.elapsed() < PATIENCE {
        attempts += 1;
        let held = versions(&table, opts, last.keys().copied())
            .await
            .map_err(err)?;
        let write: BTreeMap<i32, i64> = last
            .iter()
            .filter(|(p, &o)| {
                let h = held.get(p).copied().unwrap_or_default();
                match (h.last, mode) {
                    (None, _) | (Some(_), Record::Exactly) => true,
                    (Some(h), Record::Lower) => h > o,
                    (Some(_), Record::Start) => false,
                }
            })
            .map(|(&p, &o)| (p, o))
            .collect();
        let mut result: BTreeMap<i32, i64> = held
            .iter()
            .filter_map(|(&p, v)| Some((p, v.last?)))
            .collect();
        if write.is_empty() {
            return Ok(result);
        }
        let committed = commit_positions(&table, opts, &write, topic_id).await;
        match committed {
            Ok(_) => {
                result.extend(write);
                tracing::info!(table = name, positions = ?result, "start positions recorded in the table");
                return Ok(result);
            }
            Err(e) if e.retry() == Retry::Conflict => {
                tokio::time::sleep(backoff.next_wait()).await;
                table.update_incremental(None).await.map_err(err)?;
            }
            Err(e) => return Err(err(e)),
        }
    }
    Err(SinkError::delta(
        name,
        DeltaTableError::Generic(format!(
            "could not record start positions: {attempts} attempts in {}s lost to other \
             writers' commits",
            started.elapsed().as_secs()
        )),
    ))
}

/// One data-less commit of `write` (last offset per partition) as the table's offsets,
/// against the loaded version only.
async fn commit_positions(
    table: &DeltaTable,
    opts: &SinkOptions,
    write: &BTreeMap<i32, i64>,
    topic_id: Option<i64>,
) -> Result<(), DeltaTableError> {
    let txns = offset_txns(
        (&opts.pipeline, &opts.topic),
        write.iter().map(|(&p, &o)| (p, o)),
        topic_id,
    );
    let entry = CommitEntry {
        pipeline: opts.pipeline.clone(),
        topic: opts.topic.clone(),
        start_positions: Some(write.iter().map(|(&p, &o)| (p, o + 1)).collect()),
        ..CommitEntry::default()
    };
    let props = crate::storage::commit_properties()
        .with_application_transactions(txns)
        .with_metadata([entry.metadata()])
        .with_max_retries(0);
    let operation = DeltaOperation::StreamingUpdate {
        output_mode: OutputMode::Append,
        query_id: opts.pipeline.clone(),
        epoch_id: -1,
    };
    let snapshot: &dyn TableReference = table.snapshot()?;
    CommitBuilder::from(props)
        .with_actions(Vec::new())
        .build(Some(snapshot), table.log_store(), operation)
        .await?;
    Ok(())
}

/// Who may write a table besides the pipeline's own commits for its topic.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ownership {
    /// `pipelines.NAME.adopt`: any writer's table, knowingly.
    pub adopt: bool,
    /// A table every topic of the pipeline's multi-topic source writes: the pipeline's
    /// commits for its other topics are its own.
    pub shared_by_topics: bool,
}

/// Refuse a table whose lakestream commits were made by another pipeline or for another
/// topic: offsets are recorded per (pipeline, topic), so such a table would silently get
/// its whole topic again. `partitions` are the topic's partitions.
pub(super) async fn check_owner(
    table: &DeltaTable,
    name: &str,
    opts: &SinkOptions,
    partitions: &[i32],
    ownership: Ownership,
) -> Result<(), SinkError> {
    let err = |e| SinkError::delta(name, e);
    if table.version().unwrap_or(0) == 0 || partitions.is_empty() {
        return Ok(()); // just created, or no topic to compare with yet
    }
    let ours = versions(table, opts, partitions.iter().copied())
        .await
        .map_err(err)?;
    if ours.values().any(|h| h.last.is_some()) {
        return Ok(());
    }
    let snapshot = table.snapshot().map_err(err)?;
    let batches = snapshot
        .transaction_version(table.log_store().as_ref(), batch_app_id(&opts.pipeline))
        .await
        .map_err(err)?;
    let writer = entry::latest(table, |_| true).await.map_err(err)?;
    let files = snapshot.log_data().num_files();
    let by_us = writer.as_ref().is_some_and(|w| w.pipeline == opts.pipeline);
    if ownership.shared_by_topics && (batches.is_some() || by_us) {
        return Ok(()); // this pipeline's other topics: the new topic joins the table
    }
    let foreign = match (&writer, batches) {
        // Our batches, none for this topic: the topic changed.
        (_, Some(_)) => Some(format!(
            "pipeline '{}' committed batches here but none for topic '{}'{}",
            opts.pipeline,
            opts.topic,
            writer
                .as_ref()
                .map(|w| format!(" (its last commit read topic '{}')", w.topic))
                .unwrap_or_default()
        )),
        (Some(w), None) => Some(format!(
            "its commits were made by pipeline '{}' reading topic '{}'",
            w.pipeline, w.topic
        )),
        (None, None) if files > 0 => Some(format!(
            "it holds {files} data files that pipeline '{}' did not write",
            opts.pipeline
        )),
        (None, None) => None,
    };
    let Some(why) = foreign else {
        return Ok(());
    };
    if ownership.adopt {
        tracing::warn!(table = name, pipeline = %opts.pipeline, "adopting a table: {why}");
        return Ok(());
    }
    Err(SinkError::Owner {
        table: name.to_string(),
        message: format!(
            "{why}. Offsets are kept per pipeline and topic, so pipeline '{}' would ingest \
             topic '{}' into it again from the start. Write to a new table, restore the \
             old pipeline name and topic, or set pipelines.{}.adopt = true to take the \
             table over knowingly",
            opts.pipeline, opts.topic, opts.pipeline
        ),
    })
}

/// The topic the newest lakestream commit of table `name` read (None: no such table or
/// commit): which of two topics that name one table has been writing it.
pub async fn last_topic(
    storage: &crate::storage::Storage,
    name: &str,
) -> Result<Option<String>, SinkError> {
    let table = storage.load(name).await?;
    let entry = entry::latest(&table, |e| !e.topic.is_empty())
        .await
        .map_err(|e| SinkError::delta(name, e))?;
    Ok(entry.map(|e| e.topic))
}
