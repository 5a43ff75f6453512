//! Commits of upsert pipelines: one MERGE per micro-batch applies its changes (one per
//! key, see `engine::changes`) and records its offsets in the same commit, so a batch
//! replayed after a crash finds its offsets in the table and changes nothing twice.

use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::OutputMode;
use deltalake::DeltaTableError;

use super::batch::{AttemptError, Extra};
use super::batch::{BatchInfo, CommitOutcome};
use super::delta_sink::DeltaSink;
use super::replay::rows_beyond;
use crate::config::kafka_columns;
use crate::engine::DELETE;

pub(super) async fn try_upsert(
    sink: &mut DeltaSink,
    rows: &RecordBatch,
    batch: &BatchInfo,
    keys: &[String],
) -> Result<CommitOutcome, AttemptError> {
    let part = sink.new_part(batch).await?;
    let Some(new_ranges) = part.ranges.clone() else {
        return Ok(CommitOutcome::AlreadyCommitted);
    };
    let (committed, record) = (&part.committed, &part.record);
    let changes = rows_beyond(rows, batch, &new_ranges, committed)?;
    let batch_id = sink.batch_id_for(batch).await?;
    let count = changes.num_rows();
    let props = sink.properties(
        record,
        &new_ranges,
        (batch_id, batch.topic_id),
        count,
        Extra::Nothing,
    );
    let version = match count {
        0 => {
            sink.commit_actions(Vec::new(), props, OutputMode::Update, batch_id)
                .await?
        }
        _ => merge_changes(sink, changes, keys, props).await?,
    };
    sink.landed(record, batch, batch_id);
    Ok(CommitOutcome::Committed {
        version,
        batch_id,
        rows: count,
        input_rows: rows.num_rows(),
        late_rows: 0,
        state_rows: 0,
        watermark: None,
    })
}

/// MERGE by the keys: a delete removes the key's row, an upsert replaces it or adds
/// it. A change from another partition than the one that last changed the row
/// applies only if its Kafka timestamp is not older (the rule `engine::changes`
/// applies inside a batch, so it holds across batches too); from the same
/// partition, offset order is the order.
async fn merge_changes(
    sink: &mut DeltaSink,
    changes: RecordBatch,
    keys: &[String],
    props: CommitProperties,
) -> Result<i64, DeltaTableError> {
    let columns: Vec<String> = changes
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|c| c != DELETE)
        .collect();
    let same_source = [kafka_columns::TOPIC, kafka_columns::PARTITION]
        .into_iter()
        .filter(|c| columns.iter().any(|have| have == c))
        .map(|c| format!("source.\"{c}\" = target.\"{c}\""))
        .collect::<Vec<_>>()
        .join(" AND ");
    let newer =
        match columns.iter().any(|c| c == kafka_columns::TIMESTAMP) && !same_source.is_empty() {
            true => format!(
                " AND ({same_source} OR target.kafka_timestamp IS NULL \
             OR source.kafka_timestamp >= target.kafka_timestamp)"
            ),
            false => String::new(),
        };
    let insert = format!("NOT source.\"{DELETE}\"");
    let merge = super::merge::Merge {
        keys,
        delete_when: Some(format!("source.\"{DELETE}\"{newer}")),
        update: &columns,
        update_when: Some(format!("{insert}{newer}")),
        insert: &columns,
        insert_when: Some(insert),
    };
    super::merge::merge(sink, changes, merge, props).await
}
