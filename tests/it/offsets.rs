//! Offsets that are not records: commit markers, aborted and compacted records, a topic
//! recreated under a running member, retention past an idle partition, partitions kept
//! across incremental rebalances or added while running. Each case checks the table's
//! (partition, offset) pairs against an independent reader (confluent-kafka,
//! read_committed) and prints the time it took.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::broker::{recreate, tool, try_tool};
use crate::common::{tail, wait_until, TestEnv};

/// Every (partition, offset) a read_committed confluent-kafka consumer reads.
fn log_offsets(topic: &str) -> BTreeSet<(i32, i64)> {
    let out = try_tool(&["offsets", topic]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pairs: Vec<(i32, i64)> = serde_json::from_slice(&out.stdout).expect("offsets json");
    pairs.into_iter().collect()
}

/// The calls table's (partition, offset) pairs, each exactly once.
async fn table_offsets(env: &TestEnv) -> BTreeSet<(i32, i64)> {
    let batches = env
        .sql("calls", "SELECT kafka_partition, kafka_offset FROM t")
        .await;
    let mut pairs = BTreeSet::new();
    let mut rows = 0;
    for b in &batches {
        let p = b
            .column(0)
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Int32Array>();
        let o = b
            .column(1)
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Int64Array>();
        let (p, o) = (p.expect("partition"), o.expect("offset"));
        for i in 0..b.num_rows() {
            pairs.insert((p.value(i), o.value(i)));
            rows += 1;
        }
    }
    assert_eq!(rows, pairs.len(), "a (partition, offset) landed twice");
    pairs
}

/// Rows of the calls table now (0 before a member created it).
async fn rows(env: &TestEnv) -> i64 {
    match env.table_path("calls").join("_delta_log").exists() {
        true => env.count("calls").await,
        false => 0,
    }
}

/// Rows of the calls table whose crime_id has this tag.
async fn tagged(env: &TestEnv, tag: &str) -> i64 {
    if rows(env).await == 0 {
        return 0;
    }
    let query = format!("SELECT count(*) FROM t WHERE crime_id LIKE '{tag}-%'");
    env.scalar("calls", &query).await
}

/// The table holds exactly what the independent reader reads.
async fn assert_same_as_the_log(env: &TestEnv) {
    let log = log_offsets(&env.topic);
    let table = table_offsets(env).await;
    assert_eq!(
        table.len(),
        log.len(),
        "rows in the table vs records in the log"
    );
    assert!(
        table == log,
        "the table's (partition, offset) pairs differ from the log's"
    );
}

fn timed_catch_up(env: &TestEnv) -> (Duration, String) {
    let started = Instant::now();
    let out = env.run_ok(&["run", "--until-caught-up", "--deadline", "2m"]);
    (
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// 500 transactions of 4 records (a commit marker after every record of each
/// partition) are read as fast as 2,000 plain records: no request per gap.
#[tokio::test(flavor = "multi_thread")]
async fn small_transactions_are_read_at_the_speed_of_a_plain_topic() {
    let plain = TestEnv::new("gaps-plain");
    tool(&["create-topic", &plain.topic, "4"]);
    tool(&["produce", &plain.topic, "none", "2000", "plain"]);
    let (plain_took, _) = timed_catch_up(&plain);

    let txn = TestEnv::new("gaps-txn");
    tool(&["create-topic", &txn.topic, "4"]);
    tool(&["txn-many", &txn.topic, "4", "500", "4", "txn"]);
    let (txn_took, _) = timed_catch_up(&txn);
    eprintln!("2,000 records: plain {plain_took:?}, in 500 transactions {txn_took:?}");
    assert_same_as_the_log(&txn).await;
    assert_eq!(rows(&txn).await, 2000);
    assert!(
        txn_took < plain_took * 2 + Duration::from_secs(5),
        "transactional {txn_took:?} vs plain {plain_took:?}"
    );

    // count-topic ends though every partition ends with a marker.
    let started = Instant::now();
    let out = txn.run_ok(&["count-topic", "--topic", &txn.topic]);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("count-topic prints JSON");
    assert_eq!(report["messages"], 2000, "{report}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A compacted topic with a gap at every other offset: read in one go, each survivor
/// once.
#[tokio::test(flavor = "multi_thread")]
async fn a_compacted_topic_is_read_without_waiting_on_its_gaps() {
    let env = TestEnv::new("gaps-compacted");
    tool(&[
        "create-topic",
        &env.topic,
        "1",
        "cleanup.policy=compact",
        "segment.ms=100",
        "min.cleanable.dirty.ratio=0.001",
        "min.compaction.lag.ms=0",
        "delete.retention.ms=0",
    ]);
    // Two records per key: compaction keeps the second of each pair.
    tool(&["produce-to", &env.topic, "0", "2000", "old", "1000"]);
    std::thread::sleep(Duration::from_millis(300));
    // Rolls the segment so the cleaner may compact the rest.
    tool(&["produce-to", &env.topic, "0", "1", "roll", "1000"]);
    wait_until(Duration::from_secs(120), "the log cleaner", || async {
        log_offsets(&env.topic).len() <= 1_100
    })
    .await;
    let survivors = log_offsets(&env.topic).len();
    let (took, _) = timed_catch_up(&env);
    eprintln!("compacted topic, {survivors} survivors: {took:?}");
    assert_same_as_the_log(&env).await;
    assert!(took < Duration::from_secs(30), "{took:?}");
}

/// The table records the position past a transaction's commit marker: once retention
/// empties the idle partition, a restart resumes without a false data-loss stop, and a
/// running member reads the next transaction.
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_marker_is_no_lost_record_when_retention_empties_the_partition() {
    let env = TestEnv::new("gaps-marker");
    tool(&["create-topic", &env.topic, "1"]);
    tool(&["txn-many", &env.topic, "1", "1", "8", "first"]);
    env.catch_up();
    tool(&[
        "set-config",
        &env.topic,
        "retention.ms=1000",
        "segment.ms=100",
    ]);
    wait_until(Duration::from_secs(60), "retention to empty it", || async {
        let out = try_tool(&["low-watermarks", &env.topic]);
        serde_json::from_slice::<Vec<i64>>(&out.stdout).unwrap_or_default() == [9]
    })
    .await;
    tool(&["set-config", &env.topic, "retention.ms=-1"]);
    let started = Instant::now();
    env.catch_up();
    eprintln!("restart after retention: {:?}", started.elapsed());
    assert_eq!(rows(&env).await, 8);

    let run = env.spawn(&["run"], "run.log");
    tool(&["txn-many", &env.topic, "1", "1", "8", "second"]);
    wait_until(Duration::from_secs(60), "the next transaction", || async {
        rows(&env).await == 16
    })
    .await;
    crate::common::sigterm(&run);
    let out = run.wait_with_output().expect("run");
    let log = std::fs::read_to_string(env.dir.path().join("run.log")).unwrap_or_default();
    assert!(out.status.success(), "{}", tail(log.as_bytes()));
    assert!(!log.contains("data loss"), "{}", tail(log.as_bytes()));
    assert_eq!(table_offsets(&env).await.len(), 16);
}

/// A topic deleted and recreated shorter under a running member whose partitions
/// delivered nothing since their assignment: the member notices (the topic's id) and,
/// with `fail_on_data_loss = false`, reads the new topic from its start; by default it
/// stops and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_topic_recreated_shorter_under_a_running_member_is_noticed() {
    let env = TestEnv::new("recreated-idle");
    tool(&["create-topic", &env.topic, "4"]);
    tool(&["produce", &env.topic, "none", "100", "old"]);
    let run = env.spawn(
        &["--set", "kafka.fail_on_data_loss=false", "run"],
        "run.log",
    );
    wait_until(Duration::from_secs(60), "the old topic", || async {
        rows(&env).await == 100
    })
    .await;
    recreate(&env.topic);
    tool(&["produce", &env.topic, "none", "40", "new"]);
    let started = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "the new topic's records",
        || async { tagged(&env, "new").await == 40 },
    )
    .await;
    eprintln!("recreated topic read after {:?}", started.elapsed());
    crate::common::sigterm(&run);
    run.wait_with_output().expect("run");
    let log = std::fs::read_to_string(env.dir.path().join("run.log")).unwrap_or_default();
    assert!(log.contains("recreated"), "{}", tail(log.as_bytes()));
    let distinct_new = env
        .scalar(
            "calls",
            "SELECT count(DISTINCT kafka_partition * 1000000 + kafka_offset) FROM t WHERE crime_id LIKE 'new-%'",
        )
        .await;
    assert_eq!(distinct_new, 40, "each new record once");

    // The default policy stops the running member, naming the cause.
    let strict = TestEnv::new("recreated-idle-stop");
    tool(&["create-topic", &strict.topic, "4"]);
    tool(&["produce", &strict.topic, "none", "100", "old"]);
    let mut run = strict.spawn(&["run"], "run.log");
    wait_until(Duration::from_secs(60), "the old topic", || async {
        rows(&strict).await == 100
    })
    .await;
    recreate(&strict.topic);
    tool(&["produce", &strict.topic, "none", "20", "new"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = run.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the member did not stop");
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(strict.dir.path().join("run.log")).unwrap_or_default();
    assert!(!status.success());
    assert!(
        log.contains("data loss") && log.contains("recreated") && log.contains(&strict.topic),
        "{}",
        tail(log.as_bytes())
    );
}

/// After DeleteRecords moved the low watermark past where a member started, members
/// joining with an incremental protocol leave the kept partitions' positions alone: no
/// false data-loss stop, every record once.
async fn kept_partitions_after_delete_records(name: &str, options: &[&str]) {
    let mut env = TestEnv::new(name);
    env.overrides.extend(options.iter().map(|o| o.to_string()));
    tool(&["create-topic", &env.topic, "4"]);
    tool(&["produce", &env.topic, "none", "400", "first"]);
    let a = env.spawn(&["run"], "a.log");
    wait_until(Duration::from_secs(60), "A to read everything", || async {
        rows(&env).await == 400
    })
    .await;
    // All of it was read: the deletion loses nothing.
    tool(&["delete-records", &env.topic, "2", "60"]);
    let b = env.spawn(&["run"], "b.log");
    tokio::time::sleep(Duration::from_secs(4)).await;
    tool(&["produce", &env.topic, "none", "400", "second"]);
    wait_until(Duration::from_secs(90), "both to read the rest", || async {
        rows(&env).await == 800
    })
    .await;
    for (member, log) in [(a, "a.log"), (b, "b.log")] {
        crate::common::sigterm(&member);
        let out = member.wait_with_output().expect("member");
        let text = std::fs::read_to_string(env.dir.path().join(log)).unwrap_or_default();
        assert!(out.status.success(), "{log}: {}", tail(text.as_bytes()));
        assert!(
            !text.contains("data loss"),
            "{log}: {}",
            tail(text.as_bytes())
        );
    }
    assert_eq!(table_offsets(&env).await.len(), 800);
}

#[tokio::test(flavor = "multi_thread")]
async fn cooperative_sticky_keeps_positions_after_delete_records() {
    kept_partitions_after_delete_records(
        "kept-coop",
        &["kafka.options.partition.assignment.strategy=cooperative-sticky"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_protocol_keeps_positions_after_delete_records() {
    kept_partitions_after_delete_records("kept-kip848", &["kafka.options.group.protocol=consumer"])
        .await;
}

/// `starting_offsets = "latest"` skips what was there at the start, but partitions
/// added while running are read from their first record.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_added_while_running_start_at_their_first_record() {
    let mut env = TestEnv::new("added-partitions");
    env.overrides.extend([
        "kafka.starting_offsets=latest".to_string(),
        "kafka.options.topic.metadata.refresh.interval.ms=1000".to_string(),
    ]);
    tool(&["create-topic", &env.topic, "2"]);
    tool(&["produce-to", &env.topic, "0,1", "20", "before"]);
    let run = env.spawn(&["run"], "run.log");
    wait_until(Duration::from_secs(30), "the start positions", || async {
        std::fs::read_to_string(env.dir.path().join("run.log"))
            .unwrap_or_default()
            .contains("partitions assigned")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    tool(&["add-partitions", &env.topic, "4"]);
    tool(&["produce-to", &env.topic, "2,3", "20", "added"]);
    tool(&["produce-to", &env.topic, "0,1", "10", "after"]);
    let started = Instant::now();
    wait_until(Duration::from_secs(60), "the added partitions", || async {
        rows(&env).await == 30
    })
    .await;
    eprintln!("added partitions read after {:?}", started.elapsed());
    crate::common::sigterm(&run);
    run.wait_with_output().expect("run");
    let before = tagged(&env, "before").await;
    assert_eq!(before, 0, "latest skips what was there at the start");
    let added = tagged(&env, "added").await;
    assert_eq!(added, 20, "every record of the added partitions");
}

/// A start time whose first record follows a commit marker: the broker's OffsetsForTimes
/// answer is right and accepted (no scan from the partition's start).
#[tokio::test(flavor = "multi_thread")]
async fn a_start_time_just_after_a_transaction_is_taken_from_the_broker() {
    let mut env = TestEnv::new("time-after-marker");
    tool(&["create-topic", &env.topic, "4"]);
    tool(&["txn-many", &env.topic, "4", "1", "8", "early"]);
    std::thread::sleep(Duration::from_millis(1500));
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_millis(1500));
    tool(&["txn-many", &env.topic, "4", "1", "8", "late"]);
    env.overrides.push(format!("kafka.starting_offsets={at}"));
    let (took, stderr) = timed_catch_up(&env);
    eprintln!("start at a time after a marker: {took:?}");
    assert!(
        !stderr.contains("answered OffsetsForTimes wrongly"),
        "{}",
        tail(stderr.as_bytes())
    );
    let (early, late) = (tagged(&env, "early").await, tagged(&env, "late").await);
    assert_eq!((early, late), (0, 8));
}

/// The gap check's probe: one request answers each partition's first retained offset
/// (what a gap's start is compared with).
#[tokio::test(flavor = "multi_thread")]
async fn first_offsets_are_the_low_watermarks() {
    let env = TestEnv::new("first-offsets");
    tool(&["create-topic", &env.topic, "4"]);
    tool(&["produce", &env.topic, "none", "400", "x"]);
    tool(&["delete-records", &env.topic, "2", "60"]);
    let client = crate::common::connection()
        .consumer("lakestream-test", &[])
        .expect("consumer");
    let lows = lakestream::source::first_offsets(&client, &env.topic, 0..4).expect("lows");
    assert_eq!(
        lows,
        std::collections::BTreeMap::from([(0, 0), (1, 0), (2, 60), (3, 0)])
    );
}
