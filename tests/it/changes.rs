//! When the topic changes under a pipeline: a topic deleted and recreated (as long as the
//! old one, so offsets alone cannot tell) while lakestream is down and while it runs,
//! with a kill -9 in the middle of the reset; every record of the new topic lands once in
//! every table of the shared reader, dead letters included.

use std::time::Duration;

use crate::broker::{fails, recreate, tool};
use crate::common::{sigterm, tail, wait_until, RawRecord, TestEnv};

const PATIENCE: Duration = Duration::from_secs(120);

/// Two append pipelines on one reader: `calls` and `copy` (into `calls_copy`).
fn env(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name);
    env.pipelines = vec!["calls".into(), "copy".into()];
    env.overrides.extend([
        "pipelines.copy.source=police_calls".to_string(),
        "pipelines.copy.table=calls_copy".to_string(),
        "pipelines.copy.trigger_interval=300ms".to_string(),
    ]);
    env
}

/// `per_partition` good records (`TAG-P-I`) and one malformed record in each of the four
/// partitions.
fn produce(env: &TestEnv, tag: &str, per_partition: usize) {
    let mut payloads: Vec<(i32, String)> = Vec::new();
    for p in 0..4 {
        for i in 0..per_partition {
            payloads.push((
                p,
                format!(
                    r#"{{"crime_id":"{tag}-{p}-{i}","call_date":"2018-10-01","call_date_time":"2018-10-01T10:00:00"}}"#
                ),
            ));
        }
        payloads.push((p, format!("{{{tag} is not json")));
    }
    let records: Vec<RawRecord> = payloads
        .iter()
        .map(|(p, json)| (*p, None, json.as_bytes()))
        .collect();
    env.produce_raw(&records);
}

async fn tagged(env: &TestEnv, table: &str, tag: &str) -> (i64, i64) {
    let filter = format!("crime_id LIKE '{tag}-%'");
    let rows = env
        .scalar(table, &format!("SELECT count(*) FROM t WHERE {filter}"))
        .await;
    let distinct = env
        .scalar(
            table,
            &format!(
                "SELECT count(*) FROM (SELECT DISTINCT kafka_partition, kafka_offset FROM t \
                 WHERE {filter})"
            ),
        )
        .await;
    (rows, distinct)
}

async fn dead_letters(env: &TestEnv, tag: &str) -> i64 {
    env.scalar(
        "calls_dead_letters",
        &format!(
            "SELECT count(DISTINCT kafka_partition * 1000000 + kafka_offset) FROM t \
             WHERE pipeline = 'calls' AND CAST(payload AS VARCHAR) LIKE '%{tag} is not json%'"
        ),
    )
    .await
}

/// Every table of the reader holds the new topic's records once, and the old ones stay.
async fn assert_new_topic_once(env: &TestEnv, old: usize, new: usize) {
    for table in ["calls", "calls_copy"] {
        let old_rows = (4 * old) as i64;
        let new_rows = (4 * new) as i64;
        assert_eq!(
            tagged(env, table, "old").await,
            (old_rows, old_rows),
            "{table}"
        );
        assert_eq!(
            tagged(env, table, "new").await,
            (new_rows, new_rows),
            "{table}: every record of the new topic once"
        );
    }
    assert_eq!(
        dead_letters(env, "new").await,
        4,
        "the new topic's bad records"
    );
    assert_eq!(dead_letters(env, "old").await, 4);
}

/// The new topic has more records per partition than the old one: every offset the tables
/// hold exists in it, so only the topic's id tells that it is another topic.
#[tokio::test(flavor = "multi_thread")]
async fn a_topic_recreated_while_down_is_data_loss_then_read_from_its_start_in_every_table() {
    let env = env("recreated-down");
    tool(&["create-topic", &env.topic, "4"]);
    produce(&env, "old", 10);
    env.catch_up();
    recreate(&env.topic);
    produce(&env, "new", 12);

    let err = fails(&env, &[]);
    assert!(err.contains("recreated"), "{}", tail(err.as_bytes()));
    assert_eq!(tagged(&env, "calls", "new").await, (0, 0));

    // Killed between the tables' reset commits: the restart finishes the reset.
    let mut cmd = env.command(&[
        "--set",
        "kafka.fail_on_data_loss=false",
        "run",
        "--until-caught-up",
    ]);
    cmd.env("LAKESTREAM_FAILPOINT", "during_reset:2");
    let out = cmd.output().expect("spawn");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("failpoint"),
        "expected an abort in the reset: {}",
        tail(&out.stderr)
    );
    env.catch_up_skipping_data_loss();
    assert_new_topic_once(&env, 10, 12).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_recreated_under_a_running_pipeline_is_read_from_its_start() {
    let mut env = env("recreated-live");
    env.overrides
        .push("kafka.fail_on_data_loss=false".to_string());
    tool(&["create-topic", &env.topic, "4"]);
    produce(&env, "old", 10);
    let mut run = env.spawn(&["run"], "run.log");
    let log = env.dir.path().join("run.log");
    wait_until(PATIENCE, "the old topic ingested", || async {
        env.table_path("calls_copy").join("_delta_log").exists()
            && tagged(&env, "calls", "old").await.0 == 40
            && tagged(&env, "calls_copy", "old").await.0 == 40
    })
    .await;
    recreate(&env.topic);
    produce(&env, "new", 12);
    let ingested = async {
        loop {
            if tagged(&env, "calls", "new").await.0 >= 48
                && tagged(&env, "calls_copy", "new").await.0 >= 48
                && dead_letters(&env, "new").await >= 4
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let done = tokio::time::timeout(PATIENCE, ingested).await.is_ok();
    sigterm(&run);
    let status = run.wait().expect("reap");
    let log = std::fs::read(&log).unwrap_or_default();
    assert!(done, "the new topic was not ingested:\n{}", tail(&log));
    assert!(status.success(), "{status}: {}", tail(&log));
    assert!(
        String::from_utf8_lossy(&log).contains("recreated"),
        "the loss is reported: {}",
        tail(&log)
    );
    assert_new_topic_once(&env, 10, 12).await;
}
