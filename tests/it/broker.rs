//! Guarantees that need a real Apache Kafka (tansu could not exercise them): records of
//! every compression codec from another client, an open transaction of a killed
//! producer, records deleted before they were read, a recreated topic, cooperative and
//! KIP-848 rebalances under load, and a member restarted after kill -9.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{brokers, parse_summary, tail, wait_until, TestEnv};

/// tests/fixtures/kafka_tool.py: the confluent-kafka client (its own librdkafka build).
pub(crate) fn try_tool(args: &[&str]) -> std::process::Output {
    let python = std::env::var("LAKESTREAM_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kafka_tool.py");
    Command::new(python)
        .arg(script)
        .arg(brokers())
        .args(args)
        .output()
        .expect("python3")
}

pub(crate) fn tool(args: &[&str]) {
    let out = try_tool(args);
    assert!(
        out.status.success(),
        "kafka_tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Delete `topic` and create it again with 4 partitions.
pub(crate) fn recreate(topic: &str) {
    tool(&["delete-topic", topic]);
    // Topic deletion completes in the background.
    let created = (0..40).any(|_| {
        let done = try_tool(&["create-topic", topic, "4"]).status.success();
        if !done {
            std::thread::sleep(Duration::from_millis(500));
        }
        done
    });
    assert!(created, "topic {topic} recreated");
}

/// `run --until-caught-up` expecting failure; its stderr.
pub(crate) fn fails(env: &TestEnv, extra: &[&str]) -> String {
    let mut args = extra.to_vec();
    args.extend(["run", "--until-caught-up", "--deadline", "2m"]);
    let out = env.command(&args).output().expect("spawn");
    assert!(!out.status.success(), "should fail: {}", tail(&out.stderr));
    String::from_utf8_lossy(&out.stderr).to_string()
}

async fn rows_tagged(env: &TestEnv, tag: &str) -> i64 {
    env.scalar(
        "calls",
        &format!("SELECT count(*) FROM t WHERE crime_id LIKE '{tag}-%'"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_codec_from_another_client_is_ingested_exactly() {
    let env = TestEnv::new("codecs");
    tool(&["create-topic", &env.topic, "4"]);
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for codec in codecs {
        tool(&["produce", &env.topic, codec, "400", codec]);
    }
    env.catch_up();
    env.assert_exactly_once(2_000).await;
    for codec in codecs {
        assert_eq!(
            rows_tagged(&env, codec).await,
            400,
            "records sent with {codec}"
        );
    }
}

/// A producer killed inside a transaction leaves it open until the broker aborts it
/// (transaction.timeout.ms). A catch-up started meanwhile neither ends before the
/// committed records behind the open transaction (they are in the log, readable once it
/// ends) nor waits forever, and the open transaction's records never land.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_transaction_of_a_killed_producer_neither_leaks_nor_loses() {
    let env = TestEnv::new("txn-open");
    tool(&["create-topic", &env.topic, "4"]);
    tool(&["txn-commit", &env.topic, "40", "before"]);
    tool(&["txn-open", &env.topic, "40", "open", "10000"]);
    tool(&["produce", &env.topic, "none", "40", "after"]);
    let started = Instant::now();
    let out = env.run_ok(&[
        "run",
        "--until-caught-up",
        "--deadline",
        "2m",
        "--summary",
        "json",
    ]);
    let took = started.elapsed();
    let summary = parse_summary(&out.stdout);
    assert_eq!(rows_tagged(&env, "before").await, 40, "{summary}");
    assert_eq!(
        rows_tagged(&env, "after").await,
        40,
        "committed records behind the open transaction"
    );
    assert_eq!(
        rows_tagged(&env, "open").await,
        0,
        "the aborted transaction leaks nothing"
    );
    env.assert_each_offset_once(80).await;
    assert!(
        took < Duration::from_secs(60),
        "the broker aborts the transaction after 10 s; the catch-up took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn records_deleted_before_they_were_read_are_data_loss() {
    let env = TestEnv::new("deleted");
    tool(&["create-topic", &env.topic, "4"]);
    // 100 records a partition, the first half ingested.
    tool(&["produce", &env.topic, "none", "200", "first"]);
    env.catch_up();
    assert_eq!(env.count("calls").await, 200);
    tool(&["produce", &env.topic, "none", "200", "second"]);
    // Partition 2 loses offsets 50..69 before anyone read them.
    tool(&["delete-records", &env.topic, "2", "70"]);

    let err = fails(&env, &[]);
    assert!(err.contains("data loss"), "{}", tail(err.as_bytes()));
    assert!(
        err.contains(&env.topic)
            && err.contains("partition 2")
            && err.contains("50")
            && err.contains("70"),
        "names topic, partition and offsets: {}",
        tail(err.as_bytes())
    );
    assert_eq!(
        env.count("calls").await,
        200,
        "nothing committed past the loss"
    );

    let summary = env.catch_up_skipping_data_loss();
    assert_eq!(summary["dataLossEvents"], 1, "{summary}");
    assert_eq!(
        env.count("calls").await,
        400 - 20,
        "the lost records skipped, the rest once"
    );
    env.assert_each_offset_once(380).await;
}

/// Retention (time) deletes records the table has not read: the same data loss as
/// DeleteRecords, found at assignment.
#[tokio::test(flavor = "multi_thread")]
async fn records_removed_by_retention_before_they_were_read_are_data_loss() {
    let env = TestEnv::new("retention");
    tool(&["create-topic", &env.topic, "4"]);
    tool(&["produce", &env.topic, "none", "40", "first"]);
    env.catch_up();
    tool(&["produce", &env.topic, "none", "40", "second"]);
    // Short retention and segments from now on: the next record rolls each partition's
    // segment, and the broker (checking every second) deletes the old one.
    tool(&[
        "set-config",
        &env.topic,
        "retention.ms=1000",
        "segment.ms=100",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    tool(&["produce", &env.topic, "none", "4", "roll"]);
    wait_until(Duration::from_secs(60), "retention to delete", || async {
        let out = try_tool(&["low-watermarks", &env.topic]);
        let lows: Vec<i64> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        lows.len() == 4 && lows.iter().all(|&l| l >= 20)
    })
    .await;
    // Retention off again (it also empties an expired active segment): these stay.
    tool(&["set-config", &env.topic, "retention.ms=-1"]);
    tool(&["produce", &env.topic, "none", "4", "third"]);

    let err = fails(&env, &[]);
    assert!(
        err.contains("data loss") && err.contains("retention") && err.contains(&env.topic),
        "{}",
        tail(err.as_bytes())
    );
    assert_eq!(
        env.count("calls").await,
        40,
        "nothing committed past the loss"
    );
    let summary = env.catch_up_skipping_data_loss();
    assert_eq!(summary["dataLossEvents"], 4, "one per partition: {summary}");
    assert_eq!(rows_tagged(&env, "second").await, 0, "deleted before read");
    assert_eq!(
        rows_tagged(&env, "third").await,
        4,
        "what came after the loss"
    );
    let rows = env.count("calls").await;
    env.assert_each_offset_once(rows).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_and_recreated_topic_is_data_loss_then_read_from_its_start() {
    let env = TestEnv::new("recreated");
    tool(&["create-topic", &env.topic, "4"]);
    tool(&["produce", &env.topic, "none", "120", "old"]);
    env.catch_up();
    recreate(&env.topic);
    tool(&["produce", &env.topic, "none", "40", "new"]);

    let err = fails(&env, &[]);
    assert!(err.contains("recreated"), "{}", tail(err.as_bytes()));
    assert_eq!(rows_tagged(&env, "new").await, 0);

    env.catch_up_skipping_data_loss();
    assert_eq!(
        rows_tagged(&env, "old").await,
        120,
        "the old topic's rows stay"
    );
    let new = env
        .scalar(
            "calls",
            "SELECT count(DISTINCT kafka_partition * 1000000 + kafka_offset) FROM t WHERE crime_id LIKE 'new-%'",
        )
        .await;
    assert_eq!(rows_tagged(&env, "new").await, 40, "every new record once");
    assert_eq!(new, 40);
}

/// Members join and leave under load with the cooperative-sticky assignor (or the
/// KIP-848 consumer protocol): every record exactly once, and no member stops with a
/// false data-loss report on partitions it kept across an incremental rebalance.
async fn members_join_and_leave(name: &str, options: &[&str]) {
    let mut env = TestEnv::new(name);
    env.overrides.extend(options.iter().map(|o| o.to_string()));
    const CALLS: u64 = 30_000;
    env.produce_synthetic(1, 120);
    let mut producer = env.spawn_producer(CALLS - 1, 121, 3_000);
    let a = env.spawn(&["run", "--summary", "json"], "a.log");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = env.spawn(&["run", "--summary", "json"], "b.log");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut c = env.spawn(&["run", "--summary", "json"], "c.log");
    tokio::time::sleep(Duration::from_secs(3)).await;
    crate::common::sigterm(&b);
    let b_out = b.wait_with_output().expect("b");
    assert!(
        b_out.status.success(),
        "B stops cleanly: {}",
        std::fs::read_to_string(env.dir.path().join("b.log")).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.kill().expect("kill -9 C");
    c.wait().expect("reap C");
    assert!(producer.wait().expect("producer").success());
    wait_until(
        Duration::from_secs(120),
        "A to ingest everything",
        || async { env.count("calls").await >= CALLS as i64 },
    )
    .await;
    crate::common::sigterm(&a);
    let a_out = a.wait_with_output().expect("a");
    let a_log = std::fs::read_to_string(env.dir.path().join("a.log")).unwrap_or_default();
    assert!(
        a_out.status.success(),
        "A stops cleanly: {}",
        tail(a_log.as_bytes())
    );
    assert!(
        !a_log.contains("data loss"),
        "no false data-loss report: {}",
        tail(a_log.as_bytes())
    );
    env.assert_exactly_once(CALLS as i64).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cooperative_sticky_members_join_and_leave_exactly_once() {
    members_join_and_leave(
        "coop",
        &["kafka.options.partition.assignment.strategy=cooperative-sticky"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_protocol_members_join_and_leave_exactly_once() {
    members_join_and_leave("kip848", &["kafka.options.group.protocol=consumer"]).await;
}

/// The first commit of a member started right after another was killed -9 comes within
/// the session timeout (6 s in the tests) plus a few seconds, plain `run` and catch-up.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_restarted_after_kill_9_commits_again_within_the_session_timeout() {
    let env = TestEnv::new("restart");
    env.produce_synthetic(100, 130);
    env.catch_up();
    let mut producer = env.spawn_producer(100_000, 131, 2_000);
    for round in 0..3 {
        let mut run = env.spawn(&["run"], &format!("run{round}.log"));
        let before = env.count("calls").await;
        wait_until(Duration::from_secs(60), "a commit", || async {
            env.count("calls").await > before
        })
        .await;
        run.kill().expect("kill -9");
        run.wait().expect("reap");
        let killed_at = Instant::now();
        let held = env.count("calls").await;
        let mut next = env.spawn(&["run"], &format!("next{round}.log"));
        wait_until(
            Duration::from_secs(30),
            "the restarted member's commit",
            || async { env.count("calls").await > held },
        )
        .await;
        let took = killed_at.elapsed();
        assert!(
            took < Duration::from_secs(6 + 6),
            "round {round}: first commit {took:?} after the kill"
        );
        next.kill().expect("kill -9");
        next.wait().expect("reap");
    }
    producer.kill().expect("stop producer");
    producer.wait().expect("reap");
    // Catch-up right after a kill: done within the session timeout plus the backlog.
    let mut run = env.spawn(&["run"], "last.log");
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.kill().expect("kill -9");
    run.wait().expect("reap");
    let started = Instant::now();
    env.run_ok(&["run", "--until-caught-up", "--deadline", "2m"]);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let rows = env.count("calls").await;
    env.assert_each_offset_once(rows).await;
}
