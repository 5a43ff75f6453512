//! Exactly once at the edges: a catch-up started right after a kill -9, state that must
//! outlive log cleanup, "latest" starts, data loss, and config changes that would
//! duplicate or destroy data. Each either is handled or fails loudly.

use std::time::{Duration, Instant};

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::Transaction;
use deltalake::protocol::{DeltaOperation, OutputMode};

use crate::common::{tail, wait_until, RawRecord, TestEnv};

/// Run `args`, expecting failure; its stderr.
fn fails(env: &TestEnv, args: &[&str]) -> String {
    let out = env.command(args).output().expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "{args:?} should fail: {}",
        tail(&out.stderr)
    );
    err
}

/// Wait until `table` has committed at least `rows` rows (or any commit past creation).
async fn wait_for_rows(env: &TestEnv, table: &str, rows: i64) {
    let path = env.table_path(table).join("_delta_log");
    wait_until(Duration::from_secs(60), "first commit", || {
        let path = path.clone();
        async move {
            let commits = std::fs::read_dir(&path)
                .map(|d| {
                    d.filter(|e| {
                        e.as_ref()
                            .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    })
                    .count()
                })
                .unwrap_or(0);
            commits >= 2
        }
    })
    .await;
    if rows > 0 {
        wait_until(Duration::from_secs(60), "rows committed", || async {
            env.count(table).await >= rows
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn catch_up_started_right_after_a_kill_waits_for_the_dead_members_partitions() {
    let env = TestEnv::new("edge-catchup");
    const CALLS: u64 = 24_000;
    env.produce_synthetic(1, 70);
    let mut producer = env.spawn_producer(CALLS - 1, 71, 4_000);
    let mut run = env.spawn(&["run"], "run.log");
    // Killed mid-stream: the producer is flowing, so the topic's ends at the next start
    // lie beyond what the dead member committed.
    wait_for_rows(&env, "calls", 1_000).await;
    run.kill().expect("kill -9");
    run.wait().expect("reap");

    // The dead member keeps its partitions for its 6 s session: a deadline shorter than
    // that must fail, naming what is missing, not report success.
    let started = Instant::now();
    let err = fails(&env, &["run", "--until-caught-up", "--deadline", "2s"]);
    assert!(
        err.contains("not caught up within"),
        "{}",
        tail(err.as_bytes())
    );
    assert!(err.contains("partition"), "{}", tail(err.as_bytes()));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the deadline was not kept"
    );

    assert!(producer.wait().expect("producer").success());
    // No waiting: one catch-up must end with everything in the table.
    let summary = env.catch_up();
    eprintln!("catch-up: {summary}");
    env.assert_exactly_once(CALLS as i64).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn state_outlives_log_cleanup_and_a_lost_state_refuses_to_start() {
    let mut env = TestEnv::new("edge-state");
    env.pipelines = vec!["calls".into(), "disposition_summary".into()];
    env.produce_synthetic(3_000, 80);
    env.catch_up();
    // A checkpoint, then every log entry before it cleaned up (as log retention does).
    env.run_ok(&["checkpoint", "disposition_summary"]);
    let log = env.table_path("disposition_summary").join("_delta_log");
    let last = std::fs::read_to_string(log.join("_last_checkpoint")).expect("checkpoint");
    let version: u64 = serde_json::from_str::<serde_json::Value>(&last).expect("json")["version"]
        .as_u64()
        .expect("version");
    let mut removed = 0;
    for entry in std::fs::read_dir(&log).expect("log") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let v = name
            .strip_suffix(".json")
            .and_then(|v| v.parse::<u64>().ok());
        if v.is_some_and(|v| v < version) {
            std::fs::remove_file(&path).expect("remove");
            removed += 1;
        }
    }
    assert!(removed > 0, "nothing to clean up: the test proves nothing");

    env.produce_synthetic(2_000, 81);
    env.catch_up();
    let calls = env.count("calls").await;
    assert_eq!(calls, 5_000);
    let summed = env
        .scalar("disposition_summary", "SELECT sum(calls) FROM t")
        .await;
    assert_eq!(
        summed, calls,
        "the complete-mode table lost its state after log cleanup"
    );

    // Without its state snapshot the pipeline refuses to start instead of guessing.
    std::fs::remove_dir_all(env.table_path("disposition_summary").join("_lakestream"))
        .expect("remove state");
    env.produce_synthetic(10, 82);
    let err = fails(&env, &["run", "--until-caught-up"]);
    assert!(
        err.contains("state cannot be found"),
        "{}",
        tail(err.as_bytes())
    );
    assert_eq!(
        env.scalar("disposition_summary", "SELECT sum(calls) FROM t")
            .await,
        5_000,
        "the table changed although the pipeline refused to start"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_start_is_recorded_before_reading() {
    let mut env = TestEnv::new("edge-latest");
    env.overrides.push("kafka.starting_offsets=latest".into());
    env.produce_synthetic(1_000, 90);
    // Assigned, start recorded, killed before its first batch could commit.
    let mut run = env.spawn(&["run"], "run.log");
    wait_for_rows(&env, "calls", 0).await;
    run.kill().expect("kill -9");
    run.wait().expect("reap");
    assert_eq!(env.count("calls").await, 0);

    env.produce_synthetic(500, 91);
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.catch_up();
    // Exactly the calls produced after the first start: none before, none lost.
    let rows = env.count("calls").await;
    assert_eq!(rows, 500, "records after the recorded start");
    assert_eq!(env.distinct_offsets("calls").await, 500);
}

/// Commit `offset` as the last offset the calls table holds for `partition`, as a
/// table written against an older incarnation of the topic would.
async fn pretend_offset(env: &TestEnv, partition: i32, offset: i64) {
    let table = env.open_table("calls").await;
    let txn = Transaction::new(
        format!("lakestream.calls.{}.{partition}", env.topic),
        offset,
    );
    let props = CommitProperties::default().with_application_transaction(txn);
    let snapshot: &dyn TableReference = table.snapshot().expect("snapshot");
    CommitBuilder::from(props)
        .with_actions(Vec::new())
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::StreamingUpdate {
                output_mode: OutputMode::Append,
                query_id: "test".into(),
                epoch_id: -1,
            },
        )
        .await
        .expect("commit");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resume_offset_past_the_end_is_data_loss() {
    let env = TestEnv::new("edge-loss");
    env.produce_synthetic(400, 100);
    env.catch_up();
    let p0_before = env
        .scalar("calls", "SELECT count(*) FROM t WHERE kafka_partition = 0")
        .await;
    assert!(p0_before > 0);
    pretend_offset(&env, 0, 1_000_000).await;
    env.produce_synthetic(40, 101);
    let err = fails(&env, &["run", "--until-caught-up"]);
    assert!(err.contains("data loss"), "{}", tail(err.as_bytes()));
    assert!(
        err.contains("recreated") && err.contains("fail_on_data_loss"),
        "{}",
        tail(err.as_bytes())
    );
    assert_eq!(env.count("calls").await, 400, "nothing may be committed");

    // Overridden: logged, counted, and partition 0 starts over from its first record.
    let summary = env.catch_up_skipping_data_loss();
    assert_eq!(summary["dataLossEvents"], 1, "{summary}");
    let p0 = env
        .scalar("calls", "SELECT count(*) FROM t WHERE kafka_partition = 0")
        .await;
    let others = env
        .scalar("calls", "SELECT count(*) FROM t WHERE kafka_partition <> 0")
        .await;
    let p0_distinct = env
        .scalar(
            "calls",
            "SELECT count(DISTINCT kafka_offset) FROM t WHERE kafka_partition = 0",
        )
        .await;
    // Partition 0 read again from its start (its first reading stays), the others once.
    assert_eq!(
        p0 - p0_distinct,
        p0_before,
        "partition 0 re-read from its start"
    );
    assert_eq!(others + p0_distinct, 440, "every record of the topic");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_of_another_topic_or_two_writers_are_refused() {
    let mut env = TestEnv::new("edge-owner");
    env.produce_synthetic(200, 110);
    env.catch_up();
    // The same table, now fed from another topic: its offsets would say nothing about
    // the new topic, which would be ingested again from the start.
    let other = format!("{}-renamed", env.topic);
    env.overrides
        .push(format!("sources.police_calls.topic={other}"));
    env.produce_synthetic(50, 111);
    let err = fails(&env, &["run", "--until-caught-up"]);
    assert!(
        err.contains("belongs to another pipeline or topic"),
        "{}",
        tail(err.as_bytes())
    );
    assert!(err.contains("adopt"), "{}", tail(err.as_bytes()));
    assert_eq!(env.count("calls").await, 200);
    env.overrides.push("pipelines.calls.adopt=true".into());
    env.catch_up();
    assert_eq!(env.count("calls").await, 250);

    // Config checks: one writer per table, a vacuum that cannot eat a retried commit, a
    // cron that never fires.
    let cases = [
        (
            "pipelines.disposition_summary.table=calls",
            "already written by",
        ),
        ("maintenance.vacuum.retention=2m", "commit_retry_timeout"),
        ("maintenance.compact.schedule=0 0 31 2 *", "never fires"),
    ];
    for (set, needle) in cases {
        let err = fails(
            &env,
            &[
                "--set",
                set,
                "--set",
                "maintenance.vacuum.min_retention=1m",
                "run",
            ],
        );
        assert!(
            err.contains(needle),
            "--set {set}: {}",
            tail(err.as_bytes())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_paired_writes_loses_and_duplicates_nothing() {
    let points = ["after_dead_letters", "after_state_write", "after_commit"];
    for (i, point) in points.into_iter().enumerate() {
        let mut env = TestEnv::new(&format!("edge-fp{i}"));
        env.pipelines = vec!["calls".into(), "disposition_summary".into()];
        env.produce_synthetic(1_500, 130 + i as u64);
        let bad: Vec<RawRecord<'_>> = (0..4).map(|p| (p, None, &b"not json"[..])).collect();
        env.produce_raw(&bad);
        env.produce_synthetic(1_500, 140 + i as u64);

        let out = env
            .command(&["run", "--until-caught-up"])
            .env("LAKESTREAM_FAILPOINT", point)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{point}: the failpoint did not fire");
        assert!(
            err.contains(&format!("failpoint {point}")),
            "{point}: {}",
            tail(&out.stderr)
        );

        env.catch_up();
        env.assert_exactly_once(3_000).await;
        let dead = env.count("calls_dead_letters").await;
        assert_eq!(dead, 4, "{point}: dead letters");
        assert_eq!(
            env.distinct_offsets("calls_dead_letters").await,
            4,
            "{point}"
        );
        let summed = env
            .scalar("disposition_summary", "SELECT sum(calls) FROM t")
            .await;
        assert_eq!(summed, 3_000, "{point}: aggregate after the crash");
    }
}
