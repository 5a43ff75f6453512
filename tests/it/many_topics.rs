//! Many topics, one process: a pattern source reads three topics, one created while
//! `run` is running, into one table per topic and one shared table, exactly once across
//! a kill -9.

use std::time::Duration;

use crate::common::{produce_raw_to, row_strings, tail, wait_until, RawRecord, TestEnv};

const PER_TOPIC: usize = 40;
/// Alone this takes seconds; beside the suite's heavy tests, much longer.
const PATIENCE: Duration = Duration::from_secs(150);

/// `n` calls tagged `tag` to partitions 0 and 1 of `topic`.
pub(crate) fn produce(topic: &str, tag: &str, n: usize) {
    let payloads: Vec<(i32, String)> = (0..n)
        .map(|i| {
            (
                (i % 2) as i32,
                format!(
                    r#"{{"crime_id":"{tag}-{i}","call_date":"2018-10-01","call_date_time":"2018-10-01T10:00:00"}}"#
                ),
            )
        })
        .collect();
    let records: Vec<RawRecord<'_>> = payloads
        .iter()
        .map(|(p, json)| (*p, None, json.as_bytes()))
        .collect();
    produce_raw_to(topic, &records);
}

/// `topic` as its per-topic table names it.
fn table_of(topic: &str) -> String {
    format!("calls_{}", topic.replace(['.', '-'], "_"))
}

async fn rows(env: &TestEnv, table: &str) -> i64 {
    let path = env.table_path(table);
    if !path.join("_delta_log").exists() {
        return 0;
    }
    env.count(table).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pattern_source_reads_new_topics_into_per_topic_and_shared_tables_exactly_once() {
    let mut env = TestEnv::new("many");
    env.config = Some(("config/examples/many-topics.toml".into(), String::new()));
    env.pipelines = Vec::new();
    let prefix = env.topic.clone();
    env.overrides.extend([
        format!(
            "sources.feeds.topic_pattern={}\\..*",
            regex::escape(&prefix)
        ),
        "sources.feeds.topic_refresh_interval=1s".to_string(),
        "pipelines.per_topic.trigger_interval=300ms".to_string(),
        "pipelines.all.trigger_interval=300ms".to_string(),
    ]);
    let [a, b, c] = ["a", "b", "c"].map(|t| format!("{prefix}.{t}"));
    for t in [&a, &b] {
        lakestream::source::ensure_topic(&crate::common::connection(), t, 2)
            .await
            .expect("topic");
        produce(t, "first", PER_TOPIC);
    }

    let mut run = env.spawn(&["run"], "run-1.log");
    let log = env.dir.path().join("run-1.log");
    let ingested = async {
        loop {
            if rows(&env, &table_of(&a)).await == PER_TOPIC as i64
                && rows(&env, &table_of(&b)).await == PER_TOPIC as i64
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    assert!(
        tokio::time::timeout(PATIENCE, ingested).await.is_ok(),
        "topics a and b not ingested; run log:\n{}",
        tail(&std::fs::read(&log).unwrap_or_default())
    );
    // A topic created while running is picked up.
    lakestream::source::ensure_topic(&crate::common::connection(), &c, 2)
        .await
        .expect("topic");
    produce(&c, "first", PER_TOPIC);
    wait_until(PATIENCE, "topic c ingested", || async {
        rows(&env, &table_of(&c)).await == PER_TOPIC as i64
    })
    .await;
    run.kill().expect("kill -9");
    run.wait().expect("reap");

    // More records while it is down; the restarted process finds all three topics.
    for t in [&a, &b, &c] {
        produce(t, "second", PER_TOPIC);
    }
    let out = env.run_ok(&["run", "--until-caught-up", "--summary", "json"]);
    assert!(out.status.success());

    for t in [&a, &b, &c] {
        let table = table_of(t);
        let each = row_strings(
            &env.sql(
                &table,
                "SELECT count(*), count(DISTINCT kafka_partition * 1000000 + kafka_offset), \
                 count(DISTINCT kafka_topic) FROM t",
            )
            .await,
        );
        assert_eq!(
            each,
            [format!("{}|{}|1", 2 * PER_TOPIC, 2 * PER_TOPIC)],
            "{table}"
        );
    }
    let shared = row_strings(
        &env.sql(
            "calls_all",
            "SELECT kafka_topic, count(*), count(DISTINCT kafka_partition * 1000000 + kafka_offset) \
             FROM t GROUP BY kafka_topic",
        )
        .await,
    );
    let want: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|t| format!("{t}|{}|{}", 2 * PER_TOPIC, 2 * PER_TOPIC))
        .collect();
    assert_eq!(
        shared, want,
        "the shared table holds every topic's records once"
    );
    // Partitioned by the local day of call_date_time (10:00 in San Francisco).
    let table = env.open_table(&table_of(&a)).await;
    let snapshot = table.snapshot().expect("snapshot");
    assert_eq!(
        snapshot.metadata().partition_columns(),
        &["call_date_time_date".to_string()]
    );
    let days = row_strings(
        &env.sql(&table_of(&a), "SELECT DISTINCT call_date_time_date FROM t")
            .await,
    );
    assert_eq!(days, ["2018-10-01"]);
    // The per-topic tables are tables like any other for the commands.
    let out = env.run_ok(&["query", &format!("SELECT count(*) FROM {}", table_of(&c))]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&(2 * PER_TOPIC).to_string()));
}
