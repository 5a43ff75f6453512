//! The exactly-once commit on its own: replays, stale writers and partial overlaps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use lakestream::sink::{BatchInfo, CommitOutcome, DeltaSink, SinkOptions, Write};
use lakestream::source::OffsetRange;
use lakestream::storage::Storage;
use tokio_util::sync::CancellationToken;

use crate::common::TestEnv;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("value", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
    ]))
}

/// Rows for offsets `first..=last` of partition `p`.
pub(crate) fn rows(p: i32, first: i64, last: i64) -> (RecordBatch, BatchInfo) {
    let offsets: Vec<i64> = (first..=last).collect();
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                offsets.iter().map(|o| format!("v{o}")),
            )),
            Arc::new(Int32Array::from(vec![p; offsets.len()])),
            Arc::new(Int64Array::from(offsets)),
        ],
    )
    .expect("batch");
    let info = BatchInfo {
        ranges: BTreeMap::from([(p, OffsetRange { first, last })]),
        with_batch_id: true,
        topic_id: None,
    };
    (batch, info)
}

async fn open(env: &TestEnv) -> DeltaSink {
    open_table(env, "events", 100, Duration::from_secs(30 * 24 * 3600)).await
}

/// A sink writing table `name` of `env` that checkpoints every `checkpoint_interval`
/// and then drops log entries older than `log_retention`.
pub(crate) async fn open_table(
    env: &TestEnv,
    name: &str,
    checkpoint_interval: u64,
    log_retention: Duration,
) -> DeltaSink {
    let opts = SinkOptions {
        storage: Storage {
            root: env.root().display().to_string(),
            options: Default::default(),
        },
        pipeline: "p".into(),
        topic: "t".into(),
        partition_by: Vec::new(),
        change_data_feed: false,
        zstd_level: 1,
        target_file_size: 1 << 27,
        no_dictionary: Vec::new(),
        retry_timeout: Duration::from_secs(10),
        checkpoint_interval,
        log_retention,
        shutdown: CancellationToken::new(),
        contention: Default::default(),
    };
    DeltaSink::open(name, &schema(), opts)
        .await
        .expect("open sink")
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_and_stale_writers_add_each_offset_once() {
    let env = TestEnv::new("sink");
    let mut a = open(&env).await;
    let mut b = open(&env).await; // a second process, its snapshot soon stale

    let (batch, info) = rows(0, 0, 99);
    let first = a
        .commit(&batch, &info, Write::Append)
        .await
        .expect("commit");
    assert!(matches!(
        first,
        CommitOutcome::Committed {
            rows: 100,
            batch_id: Some(0),
            ..
        }
    ));

    // B never saw A's commit and holds 0..149: only 100..149 are new.
    let (batch, info) = rows(0, 0, 149);
    let second = b
        .commit(&batch, &info, Write::Append)
        .await
        .expect("commit");
    assert!(
        matches!(
            second,
            CommitOutcome::Committed {
                rows: 50,
                batch_id: Some(1),
                ..
            }
        ),
        "{second:?}"
    );

    // A replays 100..149 (as after a crash whose commit had in fact landed).
    let (batch, info) = rows(0, 100, 149);
    assert_eq!(
        a.commit(&batch, &info, Write::Append)
            .await
            .expect("commit"),
        CommitOutcome::AlreadyCommitted
    );

    // Another partition is independent.
    let (batch, info) = rows(1, 0, 9);
    let third = a
        .commit(&batch, &info, Write::Append)
        .await
        .expect("commit");
    assert!(matches!(third, CommitOutcome::Committed { rows: 10, .. }));

    assert_eq!(env.count("events").await, 160);
    let distinct = env.distinct_offsets("events").await;
    assert_eq!(distinct, 160);
    assert_eq!(b.committed_offset(0).await.expect("txn"), Some(149));
}
