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
        through: BTreeMap::new(),
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
    let opts = options(env, checkpoint_interval, log_retention);
    DeltaSink::open(name, &schema(), opts)
        .await
        .expect("open sink")
}

fn a_opts(env: &TestEnv) -> SinkOptions {
    options(env, 100, Duration::from_secs(30 * 24 * 3600))
}

fn options(env: &TestEnv, checkpoint_interval: u64, log_retention: Duration) -> SinkOptions {
    SinkOptions {
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
    }
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

/// A writer that loses a commit race catches up from the winners' commits, not by
/// forgetting what it cached: what it then knows of every partition must be what the
/// winners recorded, or a partition another member wrote meanwhile would be judged on
/// the older offset and its records written twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_race_carries_the_winners_offsets_forward() {
    let env = TestEnv::new("sink-race");
    let mut a = open(&env).await;
    let mut b = open(&env).await;

    let (batch, info) = rows(0, 0, 99);
    a.commit(&batch, &info, Write::Append)
        .await
        .expect("commit");
    assert_eq!(a.committed_offset(0).await.expect("txn"), Some(99));

    // B (a rebalance gave it partition 0) commits 100..149, and two more versions.
    b.refresh().await.expect("refresh");
    for (p, first, last) in [(0, 100, 149), (2, 0, 9), (3, 0, 9)] {
        let (batch, info) = rows(p, first, last);
        b.commit(&batch, &info, Write::Append)
            .await
            .expect("commit");
    }

    // A commits partition 1 on its old snapshot: it loses the race to B's three
    // commits, catches up and lands.
    let (batch, info) = rows(1, 0, 9);
    let landed = a
        .commit(&batch, &info, Write::Append)
        .await
        .expect("commit");
    assert!(
        matches!(
            landed,
            CommitOutcome::Committed {
                rows: 10,
                batch_id: Some(4),
                ..
            }
        ),
        "the batch counter follows the winners': {landed:?}"
    );
    assert_eq!(a.committed_offset(0).await.expect("txn"), Some(149));

    // Partition 0 comes back to A with records B already committed.
    let (batch, info) = rows(0, 100, 199);
    let back = a
        .commit(&batch, &info, Write::Append)
        .await
        .expect("commit");
    assert!(
        matches!(back, CommitOutcome::Committed { rows: 50, .. }),
        "only 150..199 are new: {back:?}"
    );
    assert_eq!(env.count("events").await, 200 + 30);
    assert_eq!(env.distinct_offsets("events").await, 230);
}

/// Members of a group start together (a Deployment's replicas) and open their tables at
/// once: when none exists yet, every one of them must end up writing the same table, not
/// fail because another created it first.
#[tokio::test(flavor = "multi_thread")]
async fn members_that_create_a_table_at_once_all_open_it() {
    let env = Arc::new(TestEnv::new("sink-create"));
    for round in 0..5 {
        let name = format!("created_{round}");
        let opens = (0..8).map(|_| {
            let (env, name) = (env.clone(), name.clone());
            tokio::spawn(async move {
                open_table(&env, &name, 100, Duration::from_secs(3600)).await;
            })
        });
        for opened in futures::future::join_all(opens).await {
            opened.expect("every member opens the table");
        }
    }
}

/// A member whose snapshot predates another member's reset (a recreated topic: the
/// table's offsets lowered) must not drop the new topic's records as already committed:
/// the table is read again before any batch is dropped.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_member_reads_the_table_again_before_dropping_a_batch() {
    let env = TestEnv::new("sink-stale-reset");
    let mut a = open(&env).await;
    let mut standby = open(&env).await;
    let (batch, info) = rows(0, 0, 99);
    a.commit(&batch, &info, Write::Append)
        .await
        .expect("commit");
    // The standby has seen offset 99 (it cached it).
    standby.refresh().await.expect("refresh");
    assert_eq!(standby.committed_offset(0).await.expect("txn"), Some(99));
    // Another member resets partition 0 to the start of a new topic.
    let opts = a_opts(&env);
    lakestream::sink::record_offsets(
        &opts,
        "events",
        &BTreeMap::from([(0, -1)]),
        lakestream::source::Record::Exactly,
        None,
    )
    .await
    .expect("reset");
    // The new topic's first 40 records, committed by the standby on its old snapshot.
    let (batch, info) = rows(0, 0, 39);
    let outcome = standby
        .commit(&batch, &info, Write::Append)
        .await
        .expect("commit");
    assert!(
        matches!(outcome, CommitOutcome::Committed { rows: 40, .. }),
        "{outcome:?}"
    );
    assert_eq!(env.count("events").await, 140);
}

/// Offsets that are no records (commit markers, aborted or compacted records) are
/// recorded as passed, with the batch's records or on their own, and never lower what
/// the table holds.
#[tokio::test(flavor = "multi_thread")]
async fn positions_past_markers_are_recorded_and_never_go_back() {
    let env = TestEnv::new("sink-through");
    let mut sink = open(&env).await;
    // Records 0..=3 of partition 0, the consumer past the marker at 4; partition 1 had
    // only a marker at 0.
    let (batch, mut info) = rows(0, 0, 3);
    info.through = BTreeMap::from([(0, 4), (1, 0)]);
    sink.commit(&batch, &info, Write::Append)
        .await
        .expect("commit");
    assert_eq!(sink.committed_offset(0).await.expect("txn"), Some(4));
    assert_eq!(sink.committed_offset(1).await.expect("txn"), Some(0));
    // Positions alone: one commit with no data, then nothing more to record.
    let only = BatchInfo {
        ranges: BTreeMap::new(),
        with_batch_id: false,
        topic_id: None,
        through: BTreeMap::from([(0, 6), (1, 0)]),
    };
    let version = sink.advance(&only).await.expect("advance");
    assert!(version.is_some());
    assert_eq!(sink.advance(&only).await.expect("advance"), None);
    let stale = BatchInfo {
        through: BTreeMap::from([(0, 2)]),
        ..only
    };
    assert_eq!(sink.advance(&stale).await.expect("advance"), None);
    let mut fresh = open(&env).await;
    assert_eq!(fresh.committed_offset(0).await.expect("txn"), Some(6));
    assert_eq!(env.count("events").await, 4);
}
